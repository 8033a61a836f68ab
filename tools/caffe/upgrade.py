"""Bring any Caffe net to the current format (V0/V1 layers, legacy inputs, data transforms) and filter by phase."""
import warnings
from typing import Any, Sequence

from . import caffe_pb2 as pb
from ..run.errors import CaffeError

_V1 = pb.V1LayerParameter
V1_TYPE_NAMES = {
    _V1.ABSVAL: "AbsVal", _V1.ACCURACY: "Accuracy", _V1.ARGMAX: "ArgMax", _V1.BNLL: "BNLL",
    _V1.CONCAT: "Concat", _V1.CONTRASTIVE_LOSS: "ContrastiveLoss", _V1.CONVOLUTION: "Convolution",
    _V1.DATA: "Data", _V1.DECONVOLUTION: "Deconvolution", _V1.DROPOUT: "Dropout",
    _V1.DUMMY_DATA: "DummyData", _V1.EUCLIDEAN_LOSS: "EuclideanLoss", _V1.ELTWISE: "Eltwise",
    _V1.EXP: "Exp", _V1.FLATTEN: "Flatten", _V1.HDF5_DATA: "HDF5Data", _V1.HDF5_OUTPUT: "HDF5Output",
    _V1.HINGE_LOSS: "HingeLoss", _V1.IM2COL: "Im2col", _V1.IMAGE_DATA: "ImageData",
    _V1.INFOGAIN_LOSS: "InfogainLoss", _V1.INNER_PRODUCT: "InnerProduct", _V1.LRN: "LRN",
    _V1.MEMORY_DATA: "MemoryData", _V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    _V1.MVN: "MVN", _V1.POOLING: "Pooling", _V1.POWER: "Power", _V1.RELU: "ReLU",
    _V1.SIGMOID: "Sigmoid", _V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    _V1.SILENCE: "Silence", _V1.SOFTMAX: "Softmax", _V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    _V1.SPLIT: "Split", _V1.SLICE: "Slice", _V1.TANH: "TanH", _V1.WINDOW_DATA: "WindowData",
    _V1.THRESHOLD: "Threshold",
}
V0_TYPES = {
    "accuracy": _V1.ACCURACY, "bnll": _V1.BNLL, "concat": _V1.CONCAT, "conv": _V1.CONVOLUTION,
    "data": _V1.DATA, "dropout": _V1.DROPOUT, "euclidean_loss": _V1.EUCLIDEAN_LOSS,
    "flatten": _V1.FLATTEN, "hdf5_data": _V1.HDF5_DATA, "hdf5_output": _V1.HDF5_OUTPUT,
    "im2col": _V1.IM2COL, "images": _V1.IMAGE_DATA, "infogain_loss": _V1.INFOGAIN_LOSS,
    "innerproduct": _V1.INNER_PRODUCT, "lrn": _V1.LRN,
    "multinomial_logistic_loss": _V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": _V1.POOLING,
    "relu": _V1.RELU, "sigmoid": _V1.SIGMOID, "softmax": _V1.SOFTMAX,
    "softmax_loss": _V1.SOFTMAX_LOSS, "split": _V1.SPLIT, "tanh": _V1.TANH,
    "window_data": _V1.WINDOW_DATA,
}
DATA_PARAMS = ("data_param", "image_data_param", "window_data_param")


def _v0_to_v1(v1, path):
    """Move a V0 `layer { ... }` block's settings into the V1 layer's typed parameter messages."""
    v0 = v1.layer
    name = v0.name or v1.name
    if v0.type not in V0_TYPES:
        raise CaffeError(f"{path}: layer '{name}': unknown V0 layer type '{v0.type}'")
    v1.name, v1.type = name, V0_TYPES[v0.type]
    v1.blobs.extend(v0.blobs)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)
    t = v0.type
    target = {"conv": v1.convolution_param, "innerproduct": v1.inner_product_param}.get(t)
    if target is not None:
        if v0.HasField("num_output"):
            target.num_output = v0.num_output
        if v0.HasField("biasterm"):
            target.bias_term = v0.biasterm
        for f in ("weight_filler", "bias_filler"):
            if v0.HasField(f):
                getattr(target, f).CopyFrom(getattr(v0, f))
    if t == "conv":
        c = v1.convolution_param
        if v0.HasField("pad"):
            c.pad.append(v0.pad)
        if v0.HasField("kernelsize"):
            c.kernel_size.append(v0.kernelsize)
        if v0.HasField("stride"):
            c.stride.append(v0.stride)
        if v0.HasField("group"):
            c.group = v0.group
    elif t == "pool":
        p = v1.pooling_param
        for src, dst in (("pad", "pad"), ("kernelsize", "kernel_size"), ("stride", "stride"),
                         ("pool", "pool")):
            if v0.HasField(src):
                setattr(p, dst, getattr(v0, src))
    elif t == "dropout" and v0.HasField("dropout_ratio"):
        v1.dropout_param.dropout_ratio = v0.dropout_ratio
    elif t == "lrn":
        for f in ("local_size", "alpha", "beta", "k"):
            if v0.HasField(f):
                setattr(v1.lrn_param, f, getattr(v0, f))
    elif t == "concat" and v0.HasField("concat_dim"):
        v1.concat_param.concat_dim = v0.concat_dim
    elif t == "hdf5_output" and v0.HasField("hdf5_output_param"):
        v1.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
    source_param = {"data": v1.data_param, "hdf5_data": v1.hdf5_data_param,
                    "images": v1.image_data_param, "window_data": v1.window_data_param}.get(t)
    if source_param is not None:
        if v0.HasField("source"):
            source_param.source = v0.source
        if v0.HasField("batchsize"):
            source_param.batch_size = v0.batchsize
        if t != "hdf5_data":
            tp = v1.transform_param
            for src, dst in (("scale", "scale"), ("meanfile", "mean_file"),
                             ("cropsize", "crop_size"), ("mirror", "mirror")):
                if v0.HasField(src):
                    setattr(tp, dst, getattr(v0, src))
        if t == "data" and v0.HasField("rand_skip"):
            v1.data_param.rand_skip = v0.rand_skip
        if t == "images":
            for src, dst in (("shuffle_images", "shuffle"), ("new_height", "new_height"),
                             ("new_width", "new_width")):
                if v0.HasField(src):
                    setattr(v1.image_data_param, dst, getattr(v0, src))
    v1.ClearField("layer")


def _merge_v0_padding(net, path):
    """V0 nets had separate 'padding' layers; fold each into the conv/pool layer that reads it."""
    layers = list(net.layers)
    pads = {l.top[0]: l for l in layers if l.HasField("layer") and l.layer.type == "padding"}
    if not pads:
        return
    kept = []
    for l in layers:
        if l.HasField("layer") and l.layer.type == "padding":
            continue
        for i, b in enumerate(l.bottom):
            if b in pads:
                if l.layer.type not in ("conv", "pool"):
                    raise CaffeError(f"{path}: V0 padding layer '{pads[b].layer.name}' feeds "
                                     f"'{l.layer.name}', which is not a conv or pool layer")
                l.layer.pad = pads[b].layer.pad
                l.bottom[i] = pads[b].bottom[0]
        kept.append(l)
    del net.layers[:]
    net.layers.extend(kept)


def _v1_to_layer(v1, path):
    layer = pb.LayerParameter()
    layer.name = v1.name
    if v1.type not in V1_TYPE_NAMES:
        raise CaffeError(f"{path}: layer '{v1.name}': unknown V1 layer type {v1.type}")
    layer.type = V1_TYPE_NAMES[v1.type]
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.include.extend(v1.include)
    layer.exclude.extend(v1.exclude)
    layer.loss_weight.extend(v1.loss_weight)
    layer.blobs.extend(v1.blobs)
    n = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
    for i in range(n):
        spec = layer.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            spec.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    for field, value in v1.ListFields():
        if field.name.endswith("_param") and field.name in layer.DESCRIPTOR.fields_by_name:
            getattr(layer, field.name).CopyFrom(value)
    return layer


def _upgrade_data_transform(layer):
    """Old data layers kept scale/mean_file/crop_size/mirror in their own parameter message."""
    for pname in DATA_PARAMS:
        if not layer.HasField(pname):
            continue
        p = getattr(layer, pname)
        for f in ("scale", "mean_file", "crop_size", "mirror"):
            if p.HasField(f):
                setattr(layer.transform_param, f, getattr(p, f))
                p.ClearField(f)


def _upgrade_inputs(net, path):
    if not net.input:
        if net.input_dim or net.input_shape:
            raise CaffeError(f"{path}: input_dim/input_shape given without any 'input' blob name")
        return
    layer = pb.LayerParameter(name="input", type="Input")
    layer.top.extend(net.input)
    if net.input_shape:
        if len(net.input_shape) not in (1, len(net.input)):
            raise CaffeError(f"{path}: {len(net.input)} inputs but {len(net.input_shape)} input_shape")
        layer.input_param.shape.extend(net.input_shape)
    elif net.input_dim:
        if len(net.input_dim) != 4 * len(net.input):
            raise CaffeError(f"{path}: input_dim must hold 4 numbers per input "
                             f"({len(net.input)} inputs, {len(net.input_dim)} numbers)")
        for i in range(len(net.input)):
            layer.input_param.shape.add(dim=net.input_dim[4 * i:4 * i + 4])
    rest = list(net.layer)
    del net.layer[:]
    net.layer.extend([layer] + rest)
    for f in ("input", "input_dim", "input_shape"):
        net.ClearField(f)


def upgrade_net(net: Any, path: str = "<net>") -> Any:
    """Upgrade `net` in place to the current format; returns it. Warns once if anything changed."""
    changed = []
    if any(l.HasField("layer") for l in net.layers):
        _merge_v0_padding(net, path)
        for l in net.layers:
            if l.HasField("layer"):
                _v0_to_v1(l, path)
        changed.append("V0 layers")
    if net.layers:
        if net.layer:
            raise CaffeError(f"{path}: mixes V1 'layers' and current 'layer' fields")
        new = [_v1_to_layer(l, path) for l in net.layers]
        net.ClearField("layers")
        net.layer.extend(new)
        changed.append("V1 layers")
    if net.input:
        _upgrade_inputs(net, path)
        changed.append("legacy input fields")
    for layer in net.layer:
        _upgrade_data_transform(layer)
    if changed:
        warnings.warn(f"{path}: upgraded {', '.join(changed)} to the current Caffe format",
                      stacklevel=2)
    return net


def state_meets_rule(state: Any, rule: Any) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    return all(s in stages for s in rule.stage) and not any(s in stages for s in rule.not_stage)


def filter_net(net: Any, phase: str = "TEST", level: int = 0, stages: Sequence[str] = (),
               path: str = "<net>") -> Any:
    """A copy of `net` keeping only the layers Caffe would instantiate in this phase/level/stages."""
    state = pb.NetState(phase=pb.TRAIN if str(phase).upper() == "TRAIN" else pb.TEST,
                        level=level, stage=list(stages))
    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for layer in net.layer:
        if layer.include and layer.exclude:
            raise CaffeError(f"{path}: layer '{layer.name}' has both include and exclude rules")
        if layer.include:
            keep = any(state_meets_rule(state, r) for r in layer.include)
        else:
            keep = not any(state_meets_rule(state, r) for r in layer.exclude)
        if keep:
            out.layer.add().CopyFrom(layer)
    out.state.CopyFrom(state)
    return out
