"""Where Caffe's layers, net and solvers decide an edge case, we decide it the same way; each case cites the
BVLC source line it follows. Tolerances: exact where Caffe's rule is a choice (ties, masks, shapes), 1e-6
on float32 gradients of O(1)."""
import math
import warnings

import numpy as np
import pytest
import torch

from tools import load_caffe_net, save_caffe_net
from tools.caffe.caffemodel import read_caffemodel, write_caffemodel
from tools.run.errors import CaffeError
from tools.caffe.prototxt import read_net, read_solver
from tools.caffe.solver import CaffeSolver, learning_rate

from .helpers import input_layer

FLT_MIN = 1.1754943508222875e-38


def net_of(text, shapes=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_caffe_net((input_layer(shapes) if shapes else "") + text, seed=0, **kw)


def one(body, shapes, bottoms=("data",), tops=("out",), **kw):
    return net_of('layer { name: "L" ' + body + " " + " ".join(f'bottom: "{b}"' for b in bottoms) + " "
                  + " ".join(f'top: "{t}"' for t in tops) + " }", shapes, **kw)


def grad(net, x, name="data", top="out"):
    x = x.clone().requires_grad_(True)
    net(**{name: x})[top].sum().backward()
    return x.grad


def test_prelu_slope_applies_at_zero():  # prelu_layer.cpp: (x > 0) + slope * (x <= 0)
    net = one('type: "PReLU"', {"data": (1, 2, 1, 3)})
    g = grad(net, torch.tensor([[[[-1.0, 0.0, 2.0]], [[0.0, 0.0, 1.0]]]]))
    assert g.flatten().tolist() == [0.25, 0.25, 1.0, 0.25, 0.25, 1.0]


def test_eltwise_max_routes_each_gradient_to_one_bottom():  # eltwise_layer.cpp: the max mask
    net = one('type: "Eltwise" eltwise_param { operation: MAX }', {"a": (4,), "b": (4,), "c": (4,)},
              bottoms=("a", "b", "c"))
    a, b, c = (torch.tensor(v, requires_grad=True) for v in
               ([1.0, 2.0, 3.0, 0.0], [1.0, 2.0, 1.0, 0.0], [0.0, 2.0, 3.0, 5.0]))
    net(a=a, b=b, c=c)["out"].sum().backward()
    # a tie of a and b goes to b; a later bottom takes over only when strictly greater
    assert a.grad.tolist() == [0, 0, 1, 0] and b.grad.tolist() == [1, 1, 0, 0] and c.grad.tolist() == [0, 0, 0, 1]


def test_eltwise_coeff_is_refused_with_prod_only():  # eltwise_layer.cpp LayerSetUp
    shapes = {"a": (3,), "b": (3,)}
    net = one('type: "Eltwise" eltwise_param { operation: MAX coeff: 2 coeff: 3 }', shapes, bottoms=("a", "b"))
    assert net(a=torch.ones(3), b=torch.zeros(3))["out"].tolist() == [1, 1, 1]  # MAX ignores coeff
    with pytest.raises(CaffeError, match="PROD"):
        one('type: "Eltwise" eltwise_param { operation: PROD coeff: 2 coeff: 3 }', shapes, bottoms=("a", "b"))


@pytest.mark.parametrize("mode,side", [("FLOOR", 2), ("CEIL", 3), ("", 3)])
def test_pooling_round_mode(mode, side):  # caffe.proto PoolingParameter field 13; pooling_layer.cpp Reshape
    rm = f"round_mode: {mode}" if mode else ""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "unknown field" warning
        net = load_caffe_net(input_layer({"data": (1, 1, 6, 6)}) + 'layer { name: "L" type: "Pooling" bottom: "data" '
                             f'top: "out" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 {rm} }} }}')
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    out = net(x)["out"]
    assert out.shape[-2:] == (side, side) and net.blob_shapes["out"] == (1, 1, side, side)
    assert out[0, 0, 0].tolist()[:2] == [14.0, 16.0]


def test_global_max_pooling_sends_the_gradient_to_the_first_maximum():  # pooling_layer.cpp: strict >
    net = one('type: "Pooling" pooling_param { pool: MAX global_pooling: true }', {"data": (1, 1, 2, 2)})
    g = grad(net, torch.tensor([[[[1.0, 3.0], [3.0, 3.0]]]]))
    assert g.flatten().tolist() == [0, 1, 0, 0]


def test_bnll_gradient_is_finite_and_clamped_like_caffe():  # bnll_layer.cpp: kBNLL_THRESHOLD 50
    net = one('type: "BNLL"', {"data": (5,)})
    x = torch.tensor([-200.0, -1.0, 0.0, 60.0, 200.0])
    g = grad(net, x)
    e = np.exp(np.minimum(x.numpy().astype(np.float64), 50.0))
    assert torch.isfinite(g).all() and np.allclose(g.numpy(), e / (e + 1), atol=1e-6)
    assert np.allclose(net(x)["out"].numpy(), np.logaddexp(0, x.numpy().astype(np.float64)), rtol=1e-6)


def test_clip_passes_the_gradient_at_its_bounds():  # clip_layer.cpp: x >= min && x <= max
    net = one('type: "Clip" clip_param { min: 0 max: 1 }', {"data": (5,)})
    assert grad(net, torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0])).tolist() == [0, 1, 1, 1, 0]


def test_accuracy_counts_a_tie_against_the_label():  # accuracy_layer.cpp: >= with the label's own
    net = one('type: "Accuracy"', {"data": (2, 3), "label": (2,)}, bottoms=("data", "label"))
    out = net(data=torch.tensor([[1.0, 1.0, 0.0], [2.0, 1.0, 0.0]]), label=torch.tensor([0.0, 0.0]))["out"]
    assert float(out) == 0.5


def test_softmax_loss_gradient_where_the_label_probability_underflows():  # softmax_loss_layer.cpp
    net = one('type: "SoftmaxWithLoss"', {"data": (1, 3), "label": (1,)}, bottoms=("data", "label"))
    x = torch.tensor([[0.0, 100.0, 0.0]], requires_grad=True)
    loss = net(data=x, label=torch.tensor([0.0]))["out"]
    loss.backward()
    assert float(loss) == pytest.approx(-math.log(FLT_MIN), rel=1e-6)
    assert np.allclose(x.grad.numpy(), [[-1.0, 1.0, 0.0]], atol=1e-6)


TWO_LOSSES = '''
layer { name: "l1" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l1" loss_weight: 0.5 }
layer { name: "l2" type: "EuclideanLoss" bottom: "a" bottom: "c" top: "l2" loss_weight: 2 }
layer { name: "l3" type: "EuclideanLoss" bottom: "b" bottom: "c" top: "l3" }
layer { name: "s" type: "Eltwise" bottom: "b" bottom: "c" top: "s" loss_weight: 0.25 }
'''


def test_the_objective_is_the_loss_weighted_sum_of_tops():  # net.cpp: loss_weight x top
    net = net_of(TWO_LOSSES, {"a": (2, 3), "b": (2, 3), "c": (2, 3)})
    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(2, 3, generator=g) for _ in range(3))
    out = net(a=a, b=b, c=c, outputs=["l1", "l2", "l3", "s"])
    want = 0.5 * out["l1"] + 2 * out["l2"] + out["l3"] + 0.25 * out["s"].sum()
    assert torch.allclose(net.objective(a=a, b=b, c=c), want)
    two_tops = net_of('layer { name: "s2" type: "Slice" bottom: "a" top: "p" top: "q" loss_weight: 1 loss_weight: 0 '
                      "slice_param { axis: 1 slice_point: 1 } }", {"a": (2, 3)})
    assert two_tops.loss_weights == [("p", 1.0)]
    with pytest.raises(CaffeError, match="loss_weight 2 time"):
        net_of('layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l" '
               "loss_weight: 1 loss_weight: 2 }", {"a": (2, 3), "b": (2, 3)})


@pytest.mark.parametrize("weights", ["", "loss_weight: 1 loss_weight: 0"])
def test_softmax_with_loss_refuses_a_second_top_as_caffe_does(weights):
    """softmax_loss_layer.cpp hands its loss weights to an internal one-top Softmax: Caffe stops on
    'loss_weight must be unspecified or specified once per top blob' whatever they are (checked against it)."""
    with pytest.raises(CaffeError, match="layer 'l' .*second top"):
        net_of(f'layer {{ name: "l" type: "SoftmaxWithLoss" bottom: "a" bottom: "y" top: "l" top: "p" {weights} }}',
               {"a": (2, 3), "y": (2,)})


def test_propagate_down_false_stops_the_gradient_at_that_bottom():  # net.cpp: bottom_need_backward_
    net = one('type: "EuclideanLoss" propagate_down: true propagate_down: false', {"a": (2, 3), "b": (2, 3)},
              bottoms=("a", "b"))
    a, b = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    net.objective(a=a, b=b).backward()
    assert a.grad is not None and b.grad is None
    with pytest.raises(CaffeError, match="propagate_down"):
        one('type: "EuclideanLoss" propagate_down: false', {"a": (2, 3), "b": (2, 3)}, bottoms=("a", "b"))


def test_threshold_has_no_backward_and_says_so():  # threshold_layer.cpp: Backward NOT_IMPLEMENTED
    net = one('type: "Threshold" threshold_param { threshold: 0.5 }', {"data": (3,)})
    assert net(torch.tensor([0.0, 0.5, 1.0]))["out"].tolist() == [0, 0, 1]
    with pytest.raises(CaffeError, match="no backward"):
        grad(net, torch.tensor([0.0, 0.5, 1.0]))


SCALARS = '''layer { name: "s" type: "Scale" bottom: "data" top: "s" scale_param { num_axes: 0 bias_term: true } }
layer { name: "p" type: "PReLU" bottom: "s" top: "p" prelu_param { channel_shared: true } }
'''


def test_scalar_parameters_are_0_axis_blobs_both_ways(tmp_path):  # blob.cpp ShapeEquals; prelu_layer.cpp
    shapes = {"data": (2, 3, 4, 4)}
    net = net_of(SCALARS, shapes)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {"s.weight": (), "s.bias": (), "p.weight": ()}
    save_caffe_net(net, str(tmp_path / "n.prototxt"), str(tmp_path / "n.caffemodel"))
    assert [[b.shape for b in blobs] for _, blobs in read_caffemodel(str(tmp_path / "n.caffemodel"))[1]
            if blobs] == [[(), ()], [()]]
    # as Caffe writes them: shape {} with no dims
    write_caffemodel(str(tmp_path / "c.caffemodel"), read_net(input_layer(shapes) + SCALARS),
                     {"s": [np.float32(2.0), np.float32(0.5)], "p": [np.float32(0.1)]})
    back = net_of(SCALARS, shapes, weights=str(tmp_path / "c.caffemodel"))
    x = torch.randn(2, 3, 4, 4)
    assert torch.allclose(back(x)["p"], torch.nn.functional.prelu(2 * x + 0.5, torch.tensor([0.1])))


def test_batchnorm_updates_its_statistics_whenever_it_uses_the_batchs():  # batch_norm_layer.cpp
    net = one('type: "BatchNorm" batch_norm_param { use_global_stats: false }', {"data": (4, 2)})
    net.eval()
    with torch.no_grad():
        net(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]))
    layer = net.layer("L")
    assert float(layer.scale_factor[0]) == 1.0 and layer.mean.tolist() == [4.0, 5.0]


def test_dummy_data_shapes_and_fillers():  # dummy_data_layer.cpp
    net = net_of('layer { name: "d" type: "DummyData" top: "x" top: "y" dummy_data_param { num: 2 channels: 3 '
                 'channels: 1 height: 4 width: 5 data_filler { type: "constant" value: 7 } } }')
    out = net(outputs=["x", "y"])
    assert out["x"].shape == (2, 3, 4, 5) and out["y"].shape == (2, 1, 4, 5) and bool((out["y"] == 7).all())
    rnd = net_of('layer { name: "d" type: "DummyData" top: "x" dummy_data_param { shape { dim: 3 dim: 2 } '
                 'data_filler { type: "gaussian" std: 1 } } }')
    assert not torch.equal(rnd(outputs=["x"])["x"], rnd(outputs=["x"])["x"])  # random fillers refill
    with pytest.raises(CaffeError, match="channels"):
        net_of('layer { name: "d" type: "DummyData" top: "x" top: "y" top: "z" dummy_data_param { num: 1 '
               "channels: 1 channels: 2 height: 1 width: 1 } }")


def test_repeated_stepvalues_advance_one_step_per_iteration():  # sgd_solver.cpp GetLearningRate
    sp = read_solver('lr_policy: "multistep" base_lr: 1 gamma: 0.5 stepvalue: 10 stepvalue: 10 stepvalue: 20')
    assert [learning_rate(sp, it) for it in (9, 10, 11, 19, 20)] == [1, 0.5, 0.25, 0.25, 0.125]


@pytest.mark.parametrize("text,match", [
    ("base_lr: 0.1", "lr_policy is not set"),
    ('type: "AdaGrad" lr_policy: "fixed" base_lr: 0.1 momentum: 0.9', "momentum cannot be used with AdaGrad"),
    ('type: "RMSProp" lr_policy: "fixed" base_lr: 0.1 momentum: 0.9', "momentum cannot be used with RMSProp"),
    ('type: "SGD" solver_type: SGD lr_policy: "fixed" base_lr: 0.1', "both the legacy solver_type and type"),
])
def test_solvers_caffe_refuses(text, match):
    with pytest.raises(CaffeError, match=match):
        CaffeSolver([torch.nn.Parameter(torch.zeros(1))], read_solver(text))


def test_an_empty_scale_filler_is_constant_zero():  # scale_layer.cpp: has_filler() ? filler : constant 1
    shapes = {"data": (1, 2)}
    assert net_of('layer { name: "s" type: "Scale" bottom: "data" top: "s" scale_param { filler {} } }',
                  shapes).layer("s").weight.tolist() == [0, 0]
    assert net_of('layer { name: "s" type: "Scale" bottom: "data" top: "s" }', shapes).layer("s").weight.tolist() == [1, 1]


def test_blobs_written_in_the_prototxt_are_the_initial_weights():  # layer.hpp: blobs from the LayerParameter
    net = net_of('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { '
                 "num_output: 1 } blobs { shape { dim: 1 dim: 2 } data: 3 data: 4 } blobs { shape { dim: 1 } "
                 "data: 0.5 } }", {"data": (1, 2)})
    assert float(net(torch.tensor([[1.0, 1.0]]))["ip"]) == 7.5


@pytest.mark.parametrize("k,row", [(3, [0.5, 1.0, 0.5]), (4, [0.25, 0.75, 0.75, 0.25])])
def test_bilinear_filler_is_the_current_formula(k, row):  # filler.hpp: c = (k - 1) / (2f)
    net = net_of('layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" convolution_param { '
                 f'num_output: 1 kernel_size: {k} bias_term: false weight_filler {{ type: "bilinear" }} }} }}',
                 {"data": (1, 1, 4, 4)})
    w = net.layer("up").weight[0, 0]
    assert np.allclose(w.detach().numpy(), np.outer(row, row), atol=1e-7)


def _caffe_max_pool_mask(x, k, s, p, oh, ow):
    """pooling_layer.cpp's MAX loop in float64: windows clipped to the input, a strict > from -FLT_MAX."""
    n, c, h, w = x.shape
    out, mask = np.full((n, c, oh, ow), -3.4028234663852886e38), np.full((n, c, oh, ow), -1.0)
    for i, j, y, z in np.ndindex(n, c, oh, ow):
        h0, w0 = y * s - p, z * s - p
        for hh in range(max(h0, 0), min(h0 + k, h)):
            for ww in range(max(w0, 0), min(w0 + k, w)):
                if x[i, j, hh, ww] > out[i, j, y, z]:
                    out[i, j, y, z], mask[i, j, y, z] = x[i, j, hh, ww], hh * w + ww
    return out, mask


@pytest.mark.parametrize("pad", [0, 1, 2])
def test_max_pooling_gives_caffes_mask_as_its_second_top(pad):  # pooling_layer.cpp: use_top_mask
    x = torch.randn(2, 3, 7, 6, generator=torch.Generator().manual_seed(pad))
    x[0, 0, :3, :3] = 1.0  # ties: the first maximum in row-major order wins
    net = one(f'type: "Pooling" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 pad: {pad} }}', {"data": x.shape},
              tops=("out", "mask"))
    got = net(x)
    want, mask = _caffe_max_pool_mask(x.double().numpy(), 3, 2, pad, *got["out"].shape[2:])
    assert np.array_equal(got["out"].numpy(), want.astype(np.float32)) and np.array_equal(got["mask"].numpy(), mask)
    whole = one('type: "Pooling" pooling_param { pool: MAX global_pooling: true }', {"data": x.shape},
                tops=("out", "mask"))(x)
    assert np.array_equal(whole["mask"].numpy()[..., 0, 0], x.flatten(2).argmax(2).numpy())
    with pytest.raises(CaffeError, match="AVE pooling has 1 top"):
        one('type: "Pooling" pooling_param { pool: AVE kernel_size: 2 }', {"data": x.shape}, tops=("out", "mask"))


def test_accuracy_gives_the_per_class_accuracy_as_its_second_top():  # accuracy_layer.cpp: top[1]
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0])
    net = one('type: "Accuracy"', {"s": (5, 3), "y": (5,)}, bottoms=("s", "y"), tops=("acc", "per_class"))
    out = net(s=scores, y=labels)
    assert out["acc"].shape == () and out["acc"].item() == pytest.approx(3 / 5)
    assert out["per_class"].tolist() == pytest.approx([2 / 3, 1 / 2, 0.0])  # no label 2: 0, not 0/0


@pytest.mark.parametrize("layer", ['type: "PReLU" prelu_param { channel_shared: true }',
                                   'type: "Scale" scale_param { num_axes: 0 }',
                                   'type: "Bias" bias_param { num_axes: 0 }'])
def test_a_scalar_blob_as_caffe_writes_it_has_no_shape_and_loads(tmp_path, layer):
    """blob.cpp ToProto writes a 0-axis blob with no shape field; it is read back as 0 axes, and written so."""
    from tools.caffe import caffe_pb2 as pb
    from tools.caffe.caffemodel import read_caffemodel
    text = input_layer({"data": (2, 3)}) + 'layer { name: "L" ' + layer + ' bottom: "data" top: "out" }'
    net_param = pb.NetParameter()
    net_param.layer.add(name="L", type=layer.split('"')[1]).blobs.add(data=[0.375])  # as Caffe's net.save does
    (tmp_path / "n.prototxt").write_text(text)
    (tmp_path / "w.caffemodel").write_bytes(net_param.SerializeToString())
    net = load_caffe_net(str(tmp_path / "n.prototxt"), str(tmp_path / "w.caffemodel"))
    assert [tuple(p.shape) for p in net.parameters()] == [()] and next(net.parameters()).item() == 0.375
    save_caffe_net(net, str(tmp_path / "b.prototxt"), str(tmp_path / "b.caffemodel"))
    back = pb.NetParameter.FromString((tmp_path / "b.caffemodel").read_bytes())
    blob = next(lp for lp in back.layer if lp.name == "L").blobs[0]
    assert not blob.HasField("shape") and list(blob.data) == [0.375]
    assert read_caffemodel(str(tmp_path / "b.caffemodel"))[1][-1][1][0].shape == ()


@pytest.mark.parametrize("kind, states", [("LSTM", ("h0", "c0")), ("RNN", ("h0",))])
def test_exposed_hidden_states_pass_no_gradient_across_batches(kind, states):
    """recurrent_layer.cpp: the initial states share only their data (no diff reaches h0 / c0) and the
    recurrent outputs' diffs are zeroed (nothing given to hT / cT flows back)."""
    shapes = {"x": (3, 2, 4), "cont": (3, 2), **{s: (1, 2, 3) for s in states}}
    finals = [f"{s[0]}T" for s in states]
    net = one(f'type: "{kind}" recurrent_param {{ num_output: 3 expose_hidden: true '
              'weight_filler { type: "gaussian" std: 0.5 } }', shapes, bottoms=tuple(shapes), tops=("out", *finals))
    g = torch.Generator().manual_seed(0)
    feed = {k: torch.randn(v, generator=g).requires_grad_(k != "cont") for k, v in shapes.items()}
    feed["cont"] = torch.ones(3, 2)
    grads = []
    for weight in (0.0, 5.0):
        net.zero_grad()
        for k in states:
            feed[k].grad = None
        out = net(**feed)
        (out["out"].sum() + weight * sum(out[f].sum() for f in finals)).backward()
        assert all(feed[k].grad is None for k in states)
        grads.append([p.grad.clone() for p in net.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))  # what hT / cT were given changed nothing


def test_force_backward_overrides_propagate_down_false():  # net.cpp: bottom_need_backward_ || force
    body = ('layer { name: "L" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "out" propagate_down: true '
            'propagate_down: false }')
    for force, b_gets_a_gradient in ((False, False), (True, True)):
        net = net_of(("force_backward: true\n" if force else "") + input_layer({"a": (2, 3), "b": (2, 3)}) + body)
        a, b = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3, requires_grad=True)
        net.objective(a=a, b=b).backward()
        assert a.grad is not None and (b.grad is not None) == b_gets_a_gradient


def test_a_loss_weighted_top_that_a_layer_also_reads_keeps_only_its_splits_weight():
    """util/insert_splits.cpp: the read top's weight moves to a Split and the layer's other weights go."""
    net = net_of('layer { name: "s" type: "Slice" bottom: "x" top: "a" top: "b" loss_weight: 2 loss_weight: 3 '
                 'slice_param { axis: 1 slice_point: 1 } }\n'
                 'layer { name: "t" type: "TanH" bottom: "a" top: "ta" loss_weight: 1 }', {"x": (2, 3)})
    assert net.loss_weights == [("a", 2.0), ("ta", 1.0)]  # b's 3 is gone
    x = torch.randn(2, 3, requires_grad=True)
    net.objective(x=x).backward()
    assert torch.equal(x.grad[:, 1:], torch.zeros(2, 2))
    alone = net_of('layer { name: "s" type: "Slice" bottom: "x" top: "a" top: "b" loss_weight: 2 loss_weight: 3 '
                   'slice_param { axis: 1 slice_point: 1 } }', {"x": (2, 3)})
    assert alone.loss_weights == [("a", 2.0), ("b", 3.0)]  # nothing read: no Split, both weights stay


@pytest.mark.parametrize("body", [
    'layer { name: "t" type: "TanH" bottom: "x" top: "y" loss_weight: 1 }\n'
    'layer { name: "r" type: "ReLU" bottom: "y" top: "y" }',
    'layer { name: "t" type: "TanH" bottom: "x" top: "y" }\nlayer { name: "p" type: "Power" bottom: "y" top: "z" }\n'
    'layer { name: "r" type: "ReLU" bottom: "y" top: "y" }',
    'layer { name: "t" type: "TanH" bottom: "x" top: "y" }\nlayer { name: "r" type: "Sigmoid" bottom: "x" top: "y" }'])
def test_a_top_with_two_sources_is_refused_as_caffe_refuses_it(body):  # net.cpp AppendTop, after insert_splits
    with pytest.raises(CaffeError, match="layer 'r' makes top 'y'.*two sources"):
        net_of(body, {"x": (2, 3)})
    net_of('layer { name: "t" type: "TanH" bottom: "x" top: "y" }\nlayer { name: "r" type: "ReLU" bottom: "y" '
           'top: "y" }\nlayer { name: "p" type: "Power" bottom: "y" top: "z" }', {"x": (2, 3)})  # plain in-place
