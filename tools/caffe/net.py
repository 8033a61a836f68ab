"""CaffeNet: any supported Caffe net as a torch.nn.Module that runs its layers in order by blob name."""
import math
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from . import caffe_pb2 as pb
from ..run.errors import CaffeError, did_you_mean
from ..run.runtime import generator
from .fillers import fill
from .objective import check_sources, loss_weights_of, place_loss_weights, split_counts
from .layers import LAYERS
from .layers.base import MAX_BLOB_ELEMENTS

DATA_LAYERS = {"Input", "Data", "ImageData", "HDF5Data", "MemoryData", "WindowData",
               "Python"}


def _declared_shapes(lp):
    """Shapes a data layer declares for its tops; None for a dimension it leaves open."""
    n = len(lp.top)
    t = lp.type
    if t == "Input":
        shapes = [list(s.dim) for s in lp.input_param.shape]
        return shapes * n if len(shapes) == 1 else (shapes or [None] * n)
    if t == "MemoryData":
        p = lp.memory_data_param
        return [[p.batch_size, p.channels, p.height, p.width], [p.batch_size]][:n]
    tp = lp.transform_param
    crop = tp.crop_size or None
    if t == "Data":
        channels = None
        if tp.siamese_size > 1:  # the jigsaw fork's data layer stacks siamese_size RGB tiles of patch_size
            channels, crop = 3 * tp.siamese_size, tp.patch_size or crop
        return [[lp.data_param.batch_size or None, channels, crop, crop], [lp.data_param.batch_size or None]][:n]
    if t == "ImageData":
        p = lp.image_data_param
        h, w = (crop, crop) if crop else (p.new_height or None, p.new_width or None)
        return [[p.batch_size, 3 if p.is_color else 1, h, w], [p.batch_size]][:n]
    if t == "HDF5Data":
        return [[lp.hdf5_data_param.batch_size or None] + [None] * 3] * n
    if t == "WindowData":
        p = lp.window_data_param
        return [[p.batch_size, 3, crop, crop], [p.batch_size]][:n]
    return [None] * n


class BuildContext:
    """Creates (or shares, by ParamSpec name) each layer's learnable blobs, as Caffe's Net::AppendParam does."""

    def __init__(self, device: Any, dtype: torch.dtype) -> None:
        self.device, self.dtype = device, dtype
        self.owners = {}    # shared param name -> (Parameter, owner layer name, ParamSpec)
        self.fillers = []   # (tensor, FillerParameter, where) still to fill unless weights arrive
        self.specs = {}     # id(Parameter) -> (lr_mult, decay_mult)
        self.lp = None
        self.total_bytes = 0

    def _alloc(self, shape, layer):
        if any(d < 0 for d in shape) or math.prod(shape) > MAX_BLOB_ELEMENTS:
            layer.fail(f"parameter shape {tuple(shape)} exceeds Caffe's blob size limit")
        self.total_bytes += math.prod(shape) * torch.finfo(self.dtype).bits // 8
        if self.total_bytes > _memory_bytes():
            layer.fail(f"the net's parameters need over {self.total_bytes >> 20} MiB, more than "
                       "this machine's memory")
        return torch.empty(shape, device=self.device, dtype=self.dtype)

    def param(self, layer: Any, attr: str, index: int, shape: Sequence[int], filler: Any) -> None:
        lp = self.lp
        spec = lp.param[index] if index < len(lp.param) else pb.ParamSpec()
        name = spec.name
        if name and name in self.owners:
            p, owner, owner_spec = self.owners[name]
            if tuple(p.shape) != tuple(shape):  # PERMISSIVE reshaping sharing is not supported
                layer.fail(f"cannot share param '{name}' of layer '{owner}': its shape is "
                           f"{tuple(p.shape)}, this layer needs {tuple(shape)}")
            for f in ("lr_mult", "decay_mult"):
                if spec.HasField(f) and getattr(spec, f) != getattr(owner_spec, f):
                    layer.fail(f"shared param '{name}' has {f} {getattr(spec, f)}, its owner "
                               f"'{owner}' has {getattr(owner_spec, f)}")
            setattr(layer, attr, p)
            return
        p = nn.Parameter(self._alloc(shape, layer), requires_grad=spec.lr_mult != 0)
        setattr(layer, attr, p)
        self.specs[id(p)] = (spec.lr_mult, spec.decay_mult)
        self.fillers.append((p, filler, f"layer '{layer.layer_name}' blob {index}"))
        if name:
            self.owners[name] = (p, layer.layer_name, spec)

    def buffer(self, layer: Any, attr: str, shape: Sequence[int]) -> None:
        t = self._alloc(shape, layer)
        t.zero_()
        layer.register_buffer(attr, t)


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


class LoadReport:
    """What a weight load matched: `loaded` layers, `missing` (layer, blob) and `unexpected` layer names."""

    def __init__(self):
        self.loaded, self.missing, self.unexpected = [], [], []

    def __str__(self):
        lines = [f"loaded weights for {len(self.loaded)} layer(s)"]
        if self.missing:
            lines.append("layers without weights (initialised by their fillers): " +
                         ", ".join(sorted({l for l, _ in self.missing})))
        if self.unexpected:
            lines.append("weights without a layer in this net (ignored): " + ", ".join(self.unexpected))
        return "\n".join(lines)


RESERVED = ("net_param", "plan", "path", "input_shapes", "layer_keys", "first_keys", "blob_shapes",
            "output_names", "param_specs", "report", "loss_weights", "frozen_bottoms", "training")


def _safe_name(name, taken):
    key = name.replace(".", "_") or "layer"
    if key.startswith("_"):  # torch keeps its own state under _names
        key = "layer" + key
    # a layer may not shadow what the module itself holds (report, training, layer(), ...)
    if key in taken or hasattr(nn.Module, key) or hasattr(CaffeNet, key) or key in RESERVED:
        i = 1
        while f"{key}_{i}" in taken:
            i += 1
        key = f"{key}_{i}"
    taken.add(key)
    return key


class CaffeNet(nn.Module):
    """A Caffe net. Call with one tensor (single-input nets) or keyword tensors named after the
    input blobs; returns {output blob name: tensor}. `outputs=[...]` returns any blobs by name."""

    def __init__(self, net_param: "pb.NetParameter", input_shapes: Optional[Dict[str, Sequence[int]]] = None,
                 device: Any = "cpu", dtype: torch.dtype = torch.float32, weights: Optional[str] = None,
                 seed: Optional[int] = None, path: str = "<net>") -> None:
        super().__init__()
        self.net_param, self.path = net_param, path
        self.input_shapes, self.plan, self.layer_keys = {}, [], {}
        self.loss_weights = []  # (top blob, weight): Caffe's objective is the weighted sum of these tops
        self.loss_at = {}       # plan index -> [(top index, weight)]: the same, where each top is made
        self.frozen_bottoms = {}  # layer key -> bottom indices with propagate_down: false
        input_shapes = {k: list(v) for k, v in (input_shapes or {}).items()}
        ctx = BuildContext(device, dtype)
        ctx.seed = seed
        # Caffe accepts repeated layer names: its name index keeps the last layer of a name, and
        # CopyTrainedLayersFrom gives a source layer's weights to the first (net.cpp)
        self.first_keys = {}
        shapes, taken, weights_given = {}, set(), []
        for lp in net_param.layer:
            if lp.type in DATA_LAYERS and not lp.bottom:
                for top, declared in zip(lp.top, _declared_shapes(lp)):
                    shape = input_shapes.pop(top, None) or declared
                    shape = self._resolve_input(top, shape, net_param, weights, lp)
                    self.input_shapes[top] = shape
                    shapes[top] = torch.Size(shape)
                continue
            cls = LAYERS.get(lp.type)
            if cls is None:
                raise CaffeError(f"{path}: layer '{lp.name}' has type '{lp.type}', which is not supported"
                                 f"{did_you_mean(lp.type, LAYERS)} (the {len(LAYERS)} supported types: "
                                 "tools.caffe.layers.LAYERS)")
            for b in lp.bottom:
                if b not in shapes:
                    raise CaffeError(f"{path}: layer '{lp.name}' needs bottom blob '{b}', which no "
                                     "earlier layer or input produces")
            bottom_shapes = [shapes[b] for b in lp.bottom]
            ctx.lp = lp
            layer = cls(lp, bottom_shapes, ctx)
            tops = [torch.Size(t) for t in layer.out_shapes(bottom_shapes)]
            if len(tops) != len(lp.top):
                raise CaffeError(f"{path}: layer '{lp.name}' ({lp.type}) makes {len(tops)} top(s), "
                                 f"the net names {len(lp.top)}")
            for t, s in zip(lp.top, tops):
                if math.prod(s) > MAX_BLOB_ELEMENTS:  # blob.cpp Reshape: CHECK_LE(shape[i], INT_MAX / count_)
                    raise CaffeError(f"{path}: layer '{lp.name}' ({lp.type}) makes top '{t}' of shape {tuple(s)}, "
                                     f"{math.prod(s):,} elements: Caffe refuses a blob over INT_MAX "
                                     f"({MAX_BLOB_ELEMENTS:,})")
                shapes[t] = s
            key = _safe_name(lp.name, taken)
            weights_given.append((loss_weights_of(lp, path), bool(lp.loss_weight), lp.type.endswith("Loss")))
            if lp.propagate_down:
                if len(lp.propagate_down) != len(lp.bottom):
                    raise CaffeError(f"{path}: layer '{lp.name}' gives propagate_down {len(lp.propagate_down)} "
                                     f"time(s); Caffe needs it 0 times or once per bottom ({len(lp.bottom)})")
                if not net_param.force_backward:  # net.cpp: force_backward overrides propagate_down: false
                    self.frozen_bottoms[key] = {i for i, down in enumerate(lp.propagate_down) if not down}
            self.add_module(key, layer)
            self.layer_keys[lp.name] = key
            self.first_keys.setdefault(lp.name, key)
            self.plan.append((key, list(lp.bottom), list(lp.top)))
        if input_shapes:
            raise CaffeError(f"{path}: input_shapes names {sorted(input_shapes)}, which are not inputs "
                             f"of the net (inputs: {', '.join(self.input_shapes) or 'none'})")
        counts = split_counts(self.plan, weights_given)
        check_sources(self.plan, counts, [lp.name for lp in net_param.layer if lp.type not in DATA_LAYERS or lp.bottom],
                      path)
        self.loss_weights, self.loss_at = place_loss_weights(self.plan, weights_given, counts)
        self.blob_shapes = {k: tuple(v) for k, v in shapes.items()}
        self.output_names = self._outputs()
        self.param_specs = ctx.specs
        self.report = LoadReport()
        loaded = set()
        inline = [lp for lp in net_param.layer if lp.blobs]
        if inline:  # weights written in the net itself initialise their layers, as Caffe's Layer does
            from .caffemodel import parse_caffemodel
            _, named = parse_caffemodel(pb.NetParameter(layer=inline).SerializeToString(),
                                        f"{path} (blobs written in the net)")
            loaded |= self.load_blobs(named)
        if weights is not None:
            loaded |= self.load_blobs(weights)
        meta = torch.device(device).type == "meta"  # shapes only: nothing to fill
        gen = generator(seed, device) if seed is not None and not meta else None
        for tensor, filler, where in ctx.fillers:
            if id(tensor) not in loaded and tensor.device.type != "meta":
                fill(tensor.data, filler, gen, where)

    def _resolve_input(self, top, shape, net_param, weights, lp):
        if shape is None:
            raise CaffeError(f"{self.path}: input '{top}' of layer '{lp.name}' ({lp.type}) has no "
                             "declared shape; pass input_shapes={'%s': (N, C, H, W)}" % top)
        shape = list(shape)
        if len(shape) > 1 and shape[1] is None:
            shape[1] = self._channels_from_weights(top, net_param, weights)
        if any(d is None for d in shape):
            raise CaffeError(f"{self.path}: input '{top}' of layer '{lp.name}' ({lp.type}) has an "
                             f"open shape {['?' if d is None else d for d in shape]}; pass "
                             f"input_shapes={{'{top}': (N, C, H, W)}}")
        if any(d < 0 for d in shape):
            raise CaffeError(f"{self.path}: input '{top}' has a negative dimension {shape}")
        return shape

    def _channels_from_weights(self, top, net_param, weights):
        consumer = next((l for l in net_param.layer if top in l.bottom), None)
        if consumer is not None and consumer.type == "Convolution" and weights:
            for name, blobs in weights:
                if name == consumer.name and blobs:
                    return int(blobs[0].shape[1]) * max(consumer.convolution_param.group, 1)
        warnings.warn(f"{self.path}: channels of input '{top}' not declared; assuming 3", stacklevel=3)
        return 3

    def _outputs(self):
        available = list(self.input_shapes)
        for _, bottoms, tops in self.plan:
            available = [b for b in available if b not in bottoms]
            available += [t for t in tops if t not in available]
        return available

    def layer(self, name: str) -> nn.Module:
        """The module of the Caffe layer called `name` (the last of that name, as Caffe's
        layer_by_name)."""
        if name not in self.layer_keys:
            raise KeyError(f"no layer named '{name}' in this net")
        return getattr(self, self.layer_keys[name])

    def layer_by_key(self, key: str) -> nn.Module:
        return getattr(self, key)

    @torch.no_grad()
    def load_blobs(self, named: Sequence[Tuple[str, list]]) -> "LoadReport":
        """Copy [(layer name, [Blob or array])] into the net by layer name, checking counts and shapes."""
        loaded, loaded_keys, report = set(), set(), LoadReport()
        for name, blobs in named:
            key = self.first_keys.get(name)
            if key is None:
                if blobs:
                    report.unexpected.append(name)
                continue
            layer = getattr(self, key)
            targets = [getattr(layer, b) for b in layer.blob_names]
            if not targets and not blobs:
                continue
            if len(blobs) != len(targets):
                if not blobs:
                    continue
                raise CaffeError(f"weights for layer '{name}' hold {len(blobs)} blob(s), the layer "
                                 f"({layer.layer_type}) has {len(targets)}")
            for i, (blob, target) in enumerate(zip(blobs, targets)):
                if not hasattr(blob, "copy_into"):
                    blob = np.asarray(blob)
                _copy_blob(name, i, blob, getattr(blob, "legacy", False), target)
                loaded.add(id(target))
            report.loaded.append(name)
            loaded_keys.add(key)
        for key, bottoms, tops in self.plan:
            layer = getattr(self, key)
            if layer.blob_names and key not in loaded_keys:
                report.missing += [(layer.layer_name, b) for b in layer.blob_names]
        self.report = report
        return loaded

    def without_side_effects(self) -> "CaffeNet":
        """Output layers (HDF5Output) stop writing their files: what export and --verify run the net with,
        so tracing or checking a net never rewrites a user's data."""
        for module in self.modules():
            if hasattr(module, "writes"):
                module.writes = False
        return self

    def _feed(self, args: Sequence[torch.Tensor], inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        if args:
            if len(args) != 1 or len(self.input_shapes) != 1 or inputs:
                raise CaffeError(f"this net has inputs {list(self.input_shapes)}: pass them by name")
            inputs = {next(iter(self.input_shapes)): args[0]}
        missing = [n for n in self.input_shapes if n not in inputs]
        unknown = [n for n in inputs if n not in self.input_shapes]
        if missing or unknown:
            raise CaffeError(f"net inputs are {list(self.input_shapes)}; missing {missing}, "
                             f"unknown {unknown}")
        return dict(inputs)

    def forward(self, *args: torch.Tensor, outputs: Optional[Sequence[str]] = None, **inputs: torch.Tensor) -> Any:
        blobs = self._feed(args, inputs)
        for _ in self.steps(blobs):
            pass
        if outputs == "all":
            return blobs
        names = self.output_names if outputs is None else outputs
        return {n: blobs[n] for n in names}

    def steps(self, blobs: Dict[str, torch.Tensor]) -> Iterator[Tuple[str, Any, List[torch.Tensor]]]:
        """Run the layers in order on `blobs` ({name: tensor}, updated in place), yielding (layer, its
        bottoms, its tops) after each: what a per-layer check or export needs."""
        for key, bottoms, tops in self.plan:
            frozen = self.frozen_bottoms.get(key, ())
            layer = getattr(self, key)
            xs = tuple(blobs[b].detach() if i in frozen else blobs[b] for i, b in enumerate(bottoms))
            outs = layer(*xs)
            blobs.update(zip(tops, outs))
            yield layer, xs, outs

    def objective(self, *args: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        """Caffe's training loss: the sum over tops with a loss weight of weight x the top's sum, each top
        as its layer made it (a later in-place layer reads it through Caffe's Split); net.cpp, loss layers
        weigh their first top 1 unless `loss_weight` says otherwise."""
        if not self.loss_weights:
            raise CaffeError(f"{self.path}: no top has a loss weight (no loss layer, no loss_weight)")
        total = 0
        for i, (_, _, outs) in enumerate(self.steps(self._feed(args, inputs))):
            for j, weight in self.loss_at.get(i, ()):
                total = total + weight * outs[j].sum()
        return total


def _copy_blob(layer, index, blob, legacy, target):
    src_shape, dst_shape = tuple(blob.shape), tuple(target.shape)
    ok = src_shape == dst_shape
    if not ok and legacy:  # Caffe compares old 4-D blobs against the shape padded to 4 axes with 1s
        ok = len(dst_shape) <= 4 and src_shape == (1,) * (4 - len(dst_shape)) + dst_shape
    if not ok:
        raise CaffeError(f"layer '{layer}' blob {index}: shape {src_shape} in the weights, the net "
                         f"expects {dst_shape}")
    if target.device.type == "cpu" and target.dtype == torch.float32 and target.is_contiguous():
        out = target.detach().numpy()
        if hasattr(blob, "copy_into"):
            blob.copy_into(out)
        else:
            np.copyto(out, np.asarray(blob).reshape(dst_shape), casting="unsafe")
    else:
        data = blob.data if hasattr(blob, "copy_into") else blob
        target.copy_(torch.from_numpy(np.array(data, dtype=np.float32).reshape(dst_shape)))


def load_caffe_net(prototxt: Any, weights: Optional[str] = None, phase: Optional[str] = "TEST",
                   input_shapes: Optional[Dict[str, Sequence[int]]] = None, device: Any = "cpu",
                   seed: Optional[int] = None, level: int = 0, stages: Sequence[str] = ()) -> CaffeNet:
    """Build the Caffe net in `prototxt` (path, text or NetParameter) as a CaffeNet module.

    Weights from `weights` (.caffemodel, binary or HDF5) are copied by layer name; what matched is
    in `net.report`. Layers without weights are initialised by their Caffe fillers (seeded by
    `seed`). The module starts in eval mode for phase TEST and train mode for TRAIN.
    """
    from .caffemodel import read_caffemodel
    from .prototxt import read_net
    net_param = read_net(prototxt, phase=phase, level=level, stages=stages)
    named = read_caffemodel(weights)[1] if weights else None
    path = str(prototxt) if isinstance(prototxt, (str, os.PathLike)) and os.path.exists(prototxt) \
        else "<net>"
    net = CaffeNet(net_param, input_shapes=input_shapes, device=device, weights=named, seed=seed,
                   path=path)
    if weights and not net.report.loaded and net.report.missing:
        raise CaffeError(f"{weights}: its weights match none of {path}'s layers (it has "
                         f"{', '.join(sorted({n for n, _ in net.report.missing})[:5])}; the file has "
                         f"{', '.join([n for n, b in named if b][:5]) or 'no weights'})")
    net.train(str(phase).upper() == "TRAIN")
    return net
