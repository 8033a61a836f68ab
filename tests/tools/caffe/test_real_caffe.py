"""tools against the genuine BVLC Caffe (9b89154, CPU), layer by layer: each case a small net, Caffe's own
fillers' weights (net.save), forward and backward in Caffe's interpreter and here, every blob, blob diff and
parameter diff within 1e-4 of Caffe's largest value. Skipped without CAFFE_PY / CAFFE_PYTHON (`make
caffe-oracle` runs them; ../shared/caffe/build.sh builds that Caffe)."""
import pytest

from .real_caffe import CaffeRefused, compare, inputs_for, needs_caffe, run_caffe, run_ours, TOLERANCE

pytestmark = needs_caffe

G = 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 }'
X = {"data": ("normal", (2, 3, 6, 7))}
X4 = {"data": ("normal", (2, 4, 5, 5))}
V = {"data": ("normal", (3, 5))}


def _net(inputs, body, force=True):
    """The case's net: its inputs as an Input layer, `force_backward` so every blob gets Caffe's diff."""
    tops = " ".join(f'top: "{n}"' for n in inputs)
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in spec[1]) + " }" for spec in inputs.values())
    return (f'name: "case"\n{"force_backward: true" if force else ""}\n'
            f'layer {{ name: "input" type: "Input" {tops} input_param {{ {dims} }} }}\n{body}')


def _layer(kind, name="l", bottoms=("data",), tops=("out",), extra=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{kind}" {b} {t} {extra} }}\n'


# a learned scale in front: what a layer that refuses to differentiate one bottom still passes back to
SCALED = ('layer { name: "s" type: "Scale" bottom: "data" top: "s" scale_param { filler { type: "gaussian" '
          'std: 1 } } }\n')
# cases for layers whose index / label bottoms Caffe refuses to differentiate run without force_backward; then
# Caffe differentiates only what a loss depends on, so their tops carry a loss weight
NO_FORCE = {"BatchReindex", "Filter", "Embed", "InfogainLoss"}
LOSS = "loss_weight: 1.5"

# name: (inputs, layers text[, backward: "diffs" (the default) | "loss" | None])
CASES = {
    "Convolution group 2, pad, stride, dilation": (X4, _layer("Convolution", extra="convolution_param { num_output: 4 "
                                                   f"kernel_size: 3 pad: 2 stride: 2 dilation: 2 group: 2 {G} }}")),
    "Convolution kernel_h/w, no bias": (X, _layer("Convolution", extra="convolution_param { num_output: 5 "
                                        "kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 bias_term: false "
                                        'weight_filler { type: "xavier" } }')),
    "Deconvolution": (X4, _layer("Deconvolution", extra=f"convolution_param {{ num_output: 3 kernel_size: 3 "
                                 f"stride: 2 pad: 1 group: 1 {G} }}")),
    "Pooling MAX ceil": (X, _layer("Pooling", extra="pooling_param { pool: MAX kernel_size: 3 stride: 2 }")),
    "Pooling AVE pad": (X, _layer("Pooling", extra="pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }")),
    "Pooling global": (X, _layer("Pooling", extra="pooling_param { pool: AVE global_pooling: true }")),
    "Pooling MAX with the mask top": (X, _layer("Pooling", tops=("out", "mask"),
                                                extra="pooling_param { pool: MAX kernel_size: 2 stride: 2 }")),
    "SPP": (X, _layer("SPP", extra="spp_param { pyramid_height: 2 pool: MAX }")),
    "LRN across": (X4, _layer("LRN", extra="lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 k: 2 }")),
    "LRN within": (X4, _layer("LRN", extra="lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 "
                              "norm_region: WITHIN_CHANNEL }")),
    "InnerProduct axis 2, transpose": (X, _layer("InnerProduct", extra="inner_product_param { num_output: 4 "
                                       f"axis: 2 transpose: true {G} }}")),
    "ReLU leaky": (X, _layer("ReLU", extra="relu_param { negative_slope: 0.1 }")),
    "PReLU": (X, _layer("PReLU", extra='prelu_param { filler { type: "gaussian" std: 0.3 } }')),
    "PReLU channel_shared": (X, _layer("PReLU", extra='prelu_param { channel_shared: true filler { type: '
                                       '"constant" value: 0.3 } }')),
    "ELU": (X, _layer("ELU", extra="elu_param { alpha: 0.7 }")),
    "Sigmoid": (X, _layer("Sigmoid")),
    "TanH": (X, _layer("TanH")),
    "AbsVal": (X, _layer("AbsVal")),
    "Power": ({"data": ("uniform", (2, 3, 4), 0.5, 2.0)},
              _layer("Power", extra="power_param { power: 1.5 scale: 0.7 shift: 0.2 }")),
    "Exp base": (X, _layer("Exp", extra="exp_param { base: 2 scale: 0.5 shift: 0.1 }")),
    "Log base": ({"data": ("uniform", (2, 3, 4), 0.5, 2.0)}, _layer("Log", extra="log_param { base: 3 scale: 1.2 "
                                                                     "shift: 0.1 }")),
    "BNLL": (X, _layer("BNLL")),
    "Threshold": (X, _layer("Threshold", extra="threshold_param { threshold: 0.2 }"), None),  # no backward
    "Clip": (X, _layer("Clip", extra="clip_param { min: -0.5 max: 0.7 }")),
    "Swish": (X, _layer("Swish", extra="swish_param { beta: 1.5 }")),
    "Dropout (TEST)": (X, _layer("Dropout", extra="dropout_param { dropout_ratio: 0.3 }")),
    "Softmax axis 2": (X, _layer("Softmax", extra="softmax_param { axis: 2 }")),
    "Concat axis 2": (X, _layer("Concat", bottoms=("data", "data"), extra="concat_param { axis: 2 }")),
    "Slice points": (X, _layer("Slice", tops=("a", "b", "c"), extra="slice_param { axis: 3 slice_point: 2 "
                               "slice_point: 5 }")),
    "Split": (X, _layer("Split", tops=("a", "b"))),
    "Flatten axes": (X, _layer("Flatten", extra="flatten_param { axis: 1 end_axis: 2 }")),
    "Reshape -1 and 0": (X, _layer("Reshape", extra="reshape_param { shape { dim: 0 dim: -1 dim: 7 } }")),
    "Eltwise SUM coeff": (X, _layer("Eltwise", bottoms=("data", "data"),
                                    extra="eltwise_param { operation: SUM coeff: 0.5 coeff: -2 }")),
    "Eltwise PROD": ({"a": ("normal", (2, 3)), "b": ("normal", (2, 3))},
                     _layer("Eltwise", bottoms=("a", "b"), extra="eltwise_param { operation: PROD }")),
    "Eltwise MAX": ({"a": ("normal", (2, 3)), "b": ("normal", (2, 3))},
                    _layer("Eltwise", bottoms=("a", "b"), extra="eltwise_param { operation: MAX }")),
    "Crop offsets": ({"data": ("normal", (2, 3, 6, 7)), "ref": ("normal", (2, 3, 3, 4))},
                     _layer("Crop", bottoms=("data", "ref"), extra="crop_param { axis: 2 offset: 1 offset: 2 }")),
    "Scale with a learned scale, bias": (X, _layer("Scale", extra='scale_param { axis: 1 bias_term: true filler { '
                                         'type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } }')),
    "Scale num_axes 0": (X, _layer("Scale", extra='scale_param { num_axes: 0 filler { type: "constant" value: 1.7 '
                                   "} }")),
    "Bias num_axes 0": (X, _layer("Bias", extra='bias_param { num_axes: 0 filler { type: "constant" value: 0.7 } }')),
    "Bias two bottoms": ({"data": ("normal", (2, 3, 4)), "b": ("normal", (3,))},
                         _layer("Bias", bottoms=("data", "b"))),
    "BatchNorm global stats": (X, _layer("BatchNorm", extra="batch_norm_param { use_global_stats: false }")),
    "MVN across channels": (X, _layer("MVN", extra="mvn_param { across_channels: true }")),
    "MVN mean only": (X, _layer("MVN", extra="mvn_param { normalize_variance: false }")),
    "ArgMax top 2 with values": (V, _layer("ArgMax", extra="argmax_param { top_k: 2 out_max_val: true }"), None),
    "ArgMax axis": (X, _layer("ArgMax", extra="argmax_param { axis: 2 }"), None),
    "Reduction MEAN axis 1": (X, _layer("Reduction", extra="reduction_param { operation: MEAN axis: 1 coeff: 2 }")),
    "Reduction SUMSQ": (X, _layer("Reduction", extra="reduction_param { operation: SUMSQ axis: 2 }")),
    "Reduction ASUM": (X, _layer("Reduction", extra="reduction_param { operation: ASUM }")),
    "Tile": (X, _layer("Tile", extra="tile_param { axis: 2 tiles: 3 }")),
    "Embed": ({"data": ("int", (2, 3), 5)}, _layer("Embed", extra=f"{LOSS} embed_param {{ num_output: 4 input_dim: 5 "
                                                   f"{G} }}"), "loss"),
    "BatchReindex": ({"data": ("normal", (3, 4)), "idx": ("int", (5,), 3)},
                     SCALED + _layer("BatchReindex", bottoms=("s", "idx"), extra=LOSS), "loss"),
    "Filter": ({"data": ("normal", (4, 3)), "keep": ("binary", (4,))},
               SCALED + _layer("Filter", bottoms=("s", "keep"), extra=LOSS), "loss"),
    "Im2col": (X, _layer("Im2col", extra="convolution_param { kernel_size: 2 stride: 2 pad: 1 }")),
    "Parameter": ({"data": ("normal", (1,))}, _layer("Parameter", bottoms=(), tops=("p",),
                  extra='parameter_param { shape { dim: 2 dim: 3 } }') + _layer("Eltwise", name="use",
                  bottoms=("p", "p"), tops=("out",))),
    "Silence": (X, _layer("Silence", tops=())),
    "SoftmaxWithLoss normalize VALID, ignore_label": (
        {"data": ("normal", (4, 5)), "label": ("int", (4,), 5)},
        _layer("SoftmaxWithLoss", bottoms=("data", "label"), tops=("loss",),
               extra="loss_param { ignore_label: 2 normalization: VALID }"), "loss"),
    "SoftmaxWithLoss axis 2": ({"data": ("normal", (2, 3, 4)), "label": ("int", (2, 4), 3)},
                               _layer("SoftmaxWithLoss", bottoms=("data", "label"), tops=("loss",)), "loss"),
    "EuclideanLoss": ({"a": ("normal", (3, 4)), "b": ("normal", (3, 4))},
                      _layer("EuclideanLoss", bottoms=("a", "b"), tops=("loss",)), "loss"),
    "SigmoidCrossEntropyLoss": ({"data": ("normal", (3, 4)), "t": ("binary", (3, 4))},
                                _layer("SigmoidCrossEntropyLoss", bottoms=("data", "t"), tops=("loss",)), "loss"),
    "MultinomialLogisticLoss": ({"data": ("uniform", (3, 4), 0.05, 1.0), "label": ("int", (3,), 4)},
                                _layer("MultinomialLogisticLoss", bottoms=("data", "label"), tops=("loss",)), "loss"),
    "HingeLoss L2": ({"data": ("normal", (3, 4)), "label": ("int", (3,), 4)},
                     _layer("HingeLoss", bottoms=("data", "label"), tops=("loss",),
                            extra="hinge_loss_param { norm: L2 }"), "loss"),
    "InfogainLoss": ({"data": ("uniform", (3, 4), 0.05, 1.0), "label": ("int", (3,), 4),
                      "h": ("uniform", (1, 1, 4, 4), 0.0, 1.0)},
                     SCALED + _layer("InfogainLoss", bottoms=("s", "label", "h"), tops=("loss",)), "loss"),
    "ContrastiveLoss legacy": ({"a": ("normal", (3, 4)), "b": ("normal", (3, 4)), "y": ("binary", (3,))},
                               _layer("ContrastiveLoss", bottoms=("a", "b", "y"), tops=("loss",),
                                      extra="contrastive_loss_param { margin: 2 legacy_version: true }"), "loss"),
    "Accuracy top 2": ({"data": ("normal", (5, 4)), "label": ("int", (5,), 4)},
                       _layer("Accuracy", bottoms=("data", "label"), tops=("acc",),
                              extra="accuracy_param { top_k: 2 }"), None),
    "Accuracy with per-class top": ({"data": ("normal", (6, 3)), "label": ("int", (6,), 3)},
                                    _layer("Accuracy", bottoms=("data", "label"), tops=("acc", "per_class")), None),
    "LSTMUnit": ({"c": ("normal", (1, 2, 3)), "x": ("normal", (1, 2, 12)), "cont": ("binary", (1, 2))},
                 _layer("LSTMUnit", bottoms=("c", "x", "cont"), tops=("c_out", "h_out"))),
    "LSTM": ({"x": ("normal", (3, 2, 4)), "cont": ("binary", (3, 2))},
             _layer("LSTM", bottoms=("x", "cont"), extra=f"recurrent_param {{ num_output: 3 {G} }}")),
    "RNN": ({"x": ("normal", (3, 2, 4)), "cont": ("binary", (3, 2))},
            _layer("RNN", bottoms=("x", "cont"), extra=f"recurrent_param {{ num_output: 3 {G} }}")),
    "LSTM expose_hidden": ({"x": ("normal", (3, 2, 4)), "cont": ("binary", (3, 2)), "h0": ("normal", (1, 2, 3)),
                           "c0": ("normal", (1, 2, 3))},
                          _layer("LSTM", bottoms=("x", "cont", "h0", "c0"), tops=("out", "hT", "cT"),
                                 extra=f"recurrent_param {{ num_output: 3 expose_hidden: true {G} }}")),
    "RNN expose_hidden": ({"x": ("normal", (3, 2, 4)), "cont": ("binary", (3, 2)), "h0": ("normal", (1, 2, 3))},
                          _layer("RNN", bottoms=("x", "cont", "h0"), tops=("out", "hT"),
                                 extra=f"recurrent_param {{ num_output: 3 expose_hidden: true {G} }}")),
    "Pooling MAX pad 2 with the mask top": (X, _layer("Pooling", tops=("out", "mask"), extra="pooling_param { "
                                            "pool: MAX kernel_size: 3 stride: 2 pad: 2 }")),
    "Pooling global MAX with the mask top": (X, _layer("Pooling", tops=("out", "mask"), extra="pooling_param { "
                                             "pool: MAX global_pooling: true }")),
    "force_backward over propagate_down false": ({"a": ("normal", (3, 4)), "b": ("normal", (3, 4))},
                                                 _layer("EuclideanLoss", bottoms=("a", "b"), tops=("loss",),
                                                        extra="propagate_down: true propagate_down: false"), "loss"),
    "Slice loss weights, one top also read (Split)": (
        X, _layer("Slice", tops=("a", "b"), extra="loss_weight: 2 loss_weight: 3 slice_param { axis: 3 "
                  "slice_point: 3 }") + _layer("TanH", name="t", bottoms=("a",), tops=("ta",), extra="loss_weight: 1"),
        "loss"),
    "a loss layer's weighted top also read (Split)": (
        {"a": ("normal", (3, 4)), "b": ("normal", (3, 4))},
        _layer("EuclideanLoss", bottoms=("a", "b"), tops=("loss",), extra="loss_weight: 2")
        + _layer("Power", name="p", bottoms=("loss",), tops=("sq",), extra="loss_weight: 1 power_param { power: 2 }"),
        "loss"),
    "DummyData": ({"data": ("normal", (1,))}, _layer("DummyData", bottoms=(), tops=("d",),
                  extra='dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: "constant" value: 0.5 } }')),
}


def _diffs(ref_outputs, seed):
    import numpy as np
    rng = np.random.default_rng(seed + 100)
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in ref_outputs.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_real_caffe(tmp_path, case):
    inputs_spec, body, *rest = CASES[case]
    backward = rest[0] if rest else "diffs"
    text = _net(inputs_spec, body, force=case not in NO_FORCE)
    inputs = inputs_for(inputs_spec)
    work = str(tmp_path)
    # a forward pass first, for the outputs' shapes; then forward + backward with a diff on every output
    proto, weights, ref = run_caffe(work, text, inputs)
    outputs = {str(n): ref[f"data/{n}"].shape for n in ref["outputs"]}
    diffs = _diffs(outputs, 0) if backward == "diffs" else None
    if backward:
        _, _, ref = run_caffe(work, text, inputs, backward=backward, diffs=diffs, weights=weights)
    ours, _ = run_ours(proto, weights, inputs, backward=backward, diffs=diffs)
    # without force_backward Caffe leaves the inputs' diffs at 0; here every float input is differentiated
    errors, missing = compare(ref, ours, skip=[f"diff/{k}" for k in inputs] if case in NO_FORCE else ())
    missing = [k for k in missing if not (k.startswith("param_diff/") and not ref[k].any())]
    assert not missing, missing
    worst = max(errors.items(), key=lambda kv: kv[1]) if errors else ("", 0.0)
    assert worst[1] <= TOLERANCE, (worst, {k: v for k, v in errors.items() if v > TOLERANCE})


REFUSED = {
    "SoftmaxWithLoss with a prob top": ({"data": ("normal", (4, 5)), "label": ("int", (4,), 5)},
                                        _layer("SoftmaxWithLoss", bottoms=("data", "label"), tops=("loss", "prob"))),
    "an in-place layer over a loss-weighted top": (X, _layer("Scale", name="s", tops=("y",), extra='loss_weight: 1 '
                                                   'scale_param { filler { type: "gaussian" std: 1 } }')
                                                   + _layer("ReLU", name="r", bottoms=("y",), tops=("y",))),
    "an in-place layer over a top another layer read first": (
        X, _layer("TanH", name="t", tops=("y",)) + _layer("Power", name="p", bottoms=("y",), tops=("z",))
        + _layer("ReLU", name="r", bottoms=("y",), tops=("y",))),
    "a top made twice": (X, _layer("TanH", name="t", tops=("y",)) + _layer("Sigmoid", name="s", tops=("y",))),
    # blob.cpp Reshape: "blob size exceeds INT_MAX"
    "a Tile top over INT_MAX elements": (X, _layer("Tile", name="t", extra="tile_param { axis: 1 tiles: 2000000000 }")),
    "a Deconvolution top over INT_MAX elements": (X, _layer("Deconvolution", name="d", extra="convolution_param { "
                                                           "num_output: 2 kernel_size: 3 stride: 100000 }")),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_caffe_refusals_are_refused_here_too(tmp_path, case):
    """A net Caffe stops on (a CHECK) is refused here, in one line naming the layer."""
    from tools.run.errors import CaffeError
    spec, body = REFUSED[case]
    inputs = inputs_for(spec)
    with pytest.raises(CaffeRefused):
        run_caffe(str(tmp_path), _net(spec, body), inputs, backward="loss")
    with pytest.raises(CaffeError, match="layer '[a-z]'"):
        run_ours(str(tmp_path / "net.prototxt"), None, inputs, backward="loss")


def test_the_forks_mvn_turns_a_uniform_grey_tile_into_plus_or_minus_50(tmp_path):
    """What README's jps++ section says of Caffe: a uniform tile of the fork's grey (0.9999 k) comes out of
    its float32 MVN x50 at +-50 for most levels (the mean's rounding residue, scaled up); jps++ gives 0."""
    import numpy as np
    import torch
    from jigsaw.tiles import GRAY
    levels = np.array([np.float32(sum(w * k for w in GRAY[0])) for k in range(256)], np.float32)
    text = _net({"data": ("normal", (256, 3, 64, 64))},
                _layer("MVN", tops=("n",), extra="mvn_param { across_channels: true }")
                + _layer("Power", name="p", bottoms=("n",), tops=("out",), extra="power_param { scale: 50 }"))
    inputs = {"data": np.broadcast_to(levels[:, None, None, None], (256, 3, 64, 64)).copy()}
    _, _, ref = run_caffe(str(tmp_path), text, inputs)
    fork = np.abs(ref["data/out"]).reshape(256, -1).max(1)
    assert (np.abs(fork - 50) < 0.1).sum() > 200 and fork[0] == 0  # level 0 stays exactly 0
    from jigsaw.tiles import _mvn
    assert torch.equal(_mvn(torch.from_numpy(inputs["data"]), 1e-9), torch.zeros(256, 3, 64, 64, dtype=torch.float64))


def test_hdf5_output_writes_what_caffes_writes(tmp_path):
    """HDF5Output, the one layer that writes: the file Caffe's forward writes and the one ours writes."""
    import h5py
    import numpy as np
    spec = {"data": ("normal", (2, 3, 4)), "label": ("normal", (2, 1))}
    inputs = inputs_for(spec)

    def net(path):
        return _net(spec, f'layer {{ name: "o" type: "HDF5Output" bottom: "data" bottom: "label" '
                          f'hdf5_output_param {{ file_name: "{path}" }} }}\n', force=False)
    (tmp_path / "caffe").mkdir()
    run_caffe(str(tmp_path / "caffe"), net(tmp_path / "caffe.h5"), inputs)
    (tmp_path / "ours.prototxt").write_text(net(tmp_path / "ours.h5"))
    run_ours(str(tmp_path / "ours.prototxt"), None, inputs)
    with h5py.File(tmp_path / "caffe.h5") as a, h5py.File(tmp_path / "ours.h5") as b:
        assert sorted(a) == sorted(b) == ["data", "label"]
        for k in a:
            assert a[k].shape == b[k].shape and np.array_equal(a[k][()], b[k][()]), k


def test_every_layer_type_both_implement_has_a_case():
    from tools.caffe.layers import LAYERS
    import inspect
    text = inspect.getsource(inspect.getmodule(test_every_layer_type_both_implement_has_a_case))
    fork_only = {"MergeData"}  # the jigsaw fork's own layer: tests/jigsaw/test_fork_form.py runs the fork
    assert [t for t in sorted(LAYERS) if t not in fork_only and f'"{t}"' not in text] == []
