"""Layers checked against float64 transcriptions of Caffe's own loops (tests/tools/caffe/reference.py).

Tolerance: 1e-5 absolute on float32 outputs of O(1) magnitude unless stated.
"""
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from tools import load_caffe_net
from tools.run.errors import CaffeError
from tools.caffe.layers.vision import caffe_pool2d

from . import reference as ref
from .helpers import input_layer

TOL = 1e-5


def build(body, shapes, tops=("out",), bottoms=("data",)):
    text = input_layer(shapes) + "layer { name: \"L\" " + body + " " + " ".join(
        f'bottom: "{b}"' for b in bottoms) + " " + " ".join(f'top: "{t}"' for t in tops) + " }"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_caffe_net(text, seed=0)


def x64(shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


@settings(max_examples=150, deadline=None)
@given(h=st.integers(1, 12), w=st.integers(1, 12), kh=st.integers(1, 5), kw=st.integers(1, 5),
       sh=st.integers(1, 4), sw=st.integers(1, 4), ph=st.integers(0, 4), pw=st.integers(0, 4),
       method=st.sampled_from(["max", "ave"]), fast=st.booleans())
def test_pooling_matches_caffe_loops(h, w, kh, kw, sh, sw, ph, pw, method, fast):
    if ph >= kh or pw >= kw or h + 2 * ph < kh or w + 2 * pw < kw:
        return  # Caffe rejects these (pad < kernel; kernel within the padded input)
    x = x64((2, 3, h, w), seed=h * 100 + w)
    ours = caffe_pool2d(x, method, (kh, kw), (sh, sw), (ph, pw), fast=fast).double().numpy()
    want = ref.pool(x.double().numpy(), method, (kh, kw), (sh, sw), (ph, pw))
    assert ours.shape == want.shape
    np.testing.assert_allclose(ours, want, atol=TOL, rtol=0)


def test_cfn_tile_gives_pool5_3x3():
    # 64 px tile: conv1 k11 s2 -> 27, pool 3/2 -> 13, pool2 -> 6, pool5 -> 3 (Caffe rounds up).
    assert caffe_pool2d(torch.zeros(1, 1, 27, 27), "max", (3, 3), (2, 2), (0, 0)).shape[-1] == 13
    assert caffe_pool2d(torch.zeros(1, 1, 13, 13), "max", (3, 3), (2, 2), (0, 0)).shape[-1] == 6
    assert caffe_pool2d(torch.zeros(1, 1, 6, 6), "max", (3, 3), (2, 2), (0, 0)).shape[-1] == 3
    # floor rounding (PyTorch's default) would give 2 here
    assert torch.nn.functional.max_pool2d(torch.zeros(1, 1, 6, 6), 3, 2).shape[-1] == 2


@pytest.mark.parametrize("n,alpha,beta,k", [(5, 0.5, 0.75, 2.0), (3, 1e-4, 0.75, 1.0), (1, 0.3, 0.5, 1.5)])
def test_lrn_across_channels(n, alpha, beta, k):
    net = build(f'type: "LRN" lrn_param {{ local_size: {n} alpha: {alpha} beta: {beta} k: {k} }}',
                {"data": (2, 7, 5, 4)})
    x = x64((2, 7, 5, 4))
    np.testing.assert_allclose(net(x)["out"].double().numpy(),
                               ref.lrn_across(x.double().numpy(), n, alpha, beta, k), atol=TOL)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_lrn_within_channel_divides_by_size_squared_and_ignores_k(n):
    net = build(f'type: "LRN" lrn_param {{ local_size: {n} alpha: 0.7 beta: 0.75 k: 9 '
                'norm_region: WITHIN_CHANNEL }', {"data": (2, 3, 6, 5)})
    x = x64((2, 3, 6, 5))
    np.testing.assert_allclose(net(x)["out"].double().numpy(),
                               ref.lrn_within(x.double().numpy(), n, 0.7, 0.75), atol=TOL)


def test_lrn_rejects_even_size():
    with pytest.raises(CaffeError, match="local_size must be odd"):
        build('type: "LRN" lrn_param { local_size: 4 }', {"data": (1, 6, 4, 4)})


@pytest.mark.parametrize("factor", [2.5, 0.0])
def test_batchnorm_scale_factor_blob(factor):
    net = build('type: "BatchNorm" batch_norm_param { eps: 0.01 }', {"data": (2, 3, 4, 4)})
    layer = net.layer("L")
    mean, var = np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.5, 2.0])
    with torch.no_grad():
        layer.mean.copy_(torch.tensor(mean * factor))
        layer.variance.copy_(torch.tensor(var * factor))
        layer.scale_factor.fill_(factor)
    x = x64((2, 3, 4, 4)).double().numpy()
    m, v = (mean, var) if factor else (np.zeros(3), np.zeros(3))
    want = (x - m[None, :, None, None]) / np.sqrt(v[None, :, None, None] + 0.01)
    np.testing.assert_allclose(net(torch.from_numpy(x).float())["out"].double().numpy(), want, atol=1e-4)


def test_batchnorm_training_updates_caffe_running_sums():
    net = build('type: "BatchNorm" batch_norm_param { moving_average_fraction: 0.9 }', {"data": (4, 2, 3, 3)})
    net.train()
    x = x64((4, 2, 3, 3))
    y = net(x)["out"].double().numpy()
    xd = x.double().numpy()
    mu, var = xd.mean(axis=(0, 2, 3)), xd.var(axis=(0, 2, 3))
    np.testing.assert_allclose(y, (xd - mu[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5), atol=1e-4)
    layer = net.layer("L")
    m = 4 * 3 * 3
    np.testing.assert_allclose(layer.scale_factor.numpy(), [1.0])
    np.testing.assert_allclose(layer.mean.numpy(), mu, atol=1e-6)
    np.testing.assert_allclose(layer.variance.numpy(), var * m / (m - 1), atol=1e-5)


@pytest.mark.parametrize("body,shape,pshape,axis", [
    ('type: "Scale" scale_param { axis: 1 num_axes: 1 bias_term: true }', (2, 3, 4, 5), (3,), 1),
    ('type: "Scale" scale_param { axis: 1 num_axes: 2 }', (2, 3, 4, 5), (3, 4), 1),
    ('type: "Scale" scale_param { axis: 2 num_axes: -1 }', (2, 3, 4, 5), (4, 5), 2),
    ('type: "Scale" scale_param { num_axes: 0 }', (2, 3, 4, 5), (), 1),
    ('type: "Bias" bias_param { axis: 1 }', (2, 3, 4, 5), (3,), 1),
    ('type: "Bias" bias_param { axis: -2 num_axes: 2 }', (2, 3, 4, 5), (4, 5), 2),
])
def test_scale_and_bias_broadcast_from_axis(body, shape, pshape, axis):
    net = build(body, {"data": shape})
    layer = net.layer("L")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for b in layer.blob_names:
            getattr(layer, b).copy_(torch.randn(getattr(layer, b).shape, generator=g))
    x = x64(shape).double().numpy()
    view = (1,) * axis + pshape + (1,) * (len(shape) - axis - len(pshape))
    if "Scale" in body:
        want = x * layer.weight.detach().double().numpy().reshape(view)
        if layer.bias is not None:
            want = want + layer.bias.detach().double().numpy().reshape(view)
    else:
        want = x + layer.bias.detach().double().numpy().reshape(view)
    assert tuple(getattr(layer, layer.blob_names[0]).shape) == pshape
    np.testing.assert_allclose(net(torch.from_numpy(x).float())["out"].detach().double().numpy(), want, atol=1e-5)


def test_scale_with_second_bottom():
    net = build('type: "Scale" scale_param { axis: 0 }', {"data": (2, 3, 4), "s": (2, 3)},
                bottoms=("data", "s"))
    x, s = x64((2, 3, 4)), x64((2, 3), seed=5)
    np.testing.assert_allclose(net(data=x, s=s)["out"].numpy(), (x * s[:, :, None]).numpy(), atol=1e-6)


@pytest.mark.parametrize("body,f", [
    ('type: "Log" log_param { base: 10 scale: 0.1 shift: 5 }', lambda x: np.log10(5 + 0.1 * x)),
    ('type: "Log"', np.log),
    ('type: "Exp" exp_param { base: 3 scale: 0.5 shift: 0.2 }', lambda x: 3 ** (0.2 + 0.5 * x)),
    ('type: "Exp"', np.exp),
    ('type: "Power" power_param { power: 3 scale: 2 shift: -1 }', lambda x: (2 * x - 1) ** 3),
    ('type: "Power" power_param { power: 0 }', lambda x: np.ones_like(x)),
    ('type: "BNLL"', lambda x: np.log1p(np.exp(x))),
    ('type: "ELU" elu_param { alpha: 0.3 }', lambda x: np.where(x > 0, x, 0.3 * (np.exp(x) - 1))),
    ('type: "Threshold" threshold_param { threshold: 0.25 }', lambda x: (x > 0.25).astype(float)),
    ('type: "Clip" clip_param { min: -0.5 max: 0.7 }', lambda x: np.clip(x, -0.5, 0.7)),
    ('type: "Swish" swish_param { beta: 1.5 }', lambda x: x / (1 + np.exp(-1.5 * x))),
    ('type: "ReLU" relu_param { negative_slope: -0.2 }', lambda x: np.maximum(x, 0) - 0.2 * np.minimum(x, 0)),
])
def test_elementwise_formulas(body, f):
    net = build(body, {"data": (3, 4, 5)})
    x = x64((3, 4, 5))
    if 'type: "Log"' == body:
        x = x.abs() + 0.1
    np.testing.assert_allclose(net(x)["out"].double().numpy(), f(x.double().numpy()), rtol=1e-5, atol=1e-5)


def test_bnll_stays_finite_for_large_inputs():
    net = build('type: "BNLL"', {"data": (1, 4)})
    y = net(torch.tensor([[-200.0, -50.0, 50.0, 200.0]]))["out"]
    assert torch.isfinite(y).all() and abs(float(y[0, 3]) - 200) < 1e-4


def test_inner_product_axis_and_transpose():
    net = build('type: "InnerProduct" inner_product_param { num_output: 4 axis: 2 transpose: true }',
                {"data": (2, 3, 5, 2)})
    layer = net.layer("L")
    assert tuple(layer.weight.shape) == (10, 4)
    x = x64((2, 3, 5, 2))
    want = x.double().numpy().reshape(2, 3, 10) @ layer.weight.detach().double().numpy() \
        + layer.bias.detach().double().numpy()
    np.testing.assert_allclose(net(x)["out"].detach().double().numpy(), want, atol=1e-5)


def test_slice_dim_legacy_wins_and_concat_dim():
    net = build('type: "Slice" slice_param { slice_dim: 2 slice_point: 2 }', {"data": (2, 6, 6, 4)},
                tops=("a", "b"))
    out = net(x64((2, 6, 6, 4)))
    assert out["a"].shape == (2, 6, 2, 4) and out["b"].shape == (2, 6, 4, 4)
    net = build('type: "Concat" concat_param { concat_dim: 0 }', {"data": (2, 3), "y": (5, 3)},
                bottoms=("data", "y"))
    assert net(data=torch.zeros(2, 3), y=torch.zeros(5, 3))["out"].shape == (7, 3)
    with pytest.raises(CaffeError, match="not both"):
        build('type: "Slice" slice_param { slice_dim: 1 axis: 1 }', {"data": (2, 6)}, tops=("a", "b"))


@pytest.mark.parametrize("spec,axis,num_axes,shape,want", [
    ("dim: 0 dim: -1", 0, -1, (2, 3, 4), (2, 12)),
    ("dim: 2 dim: 2", 1, 1, (2, 4, 5), (2, 2, 2, 5)),
    ("dim: 1", 1, 0, (2, 4), (2, 1, 4)),
    ("dim: -1 dim: 2", -2, -1, (3, 4, 6), (3, 4, 3, 2)),  # axis -2 starts after axis 1
    ("dim: 0 dim: 0 dim: 0", 0, -1, (3, 4, 6), (3, 4, 6)),
])
def test_reshape_zero_and_minus_one(spec, axis, num_axes, shape, want):
    net = build(f'type: "Reshape" reshape_param {{ shape {{ {spec} }} axis: {axis} num_axes: {num_axes} }}',
                {"data": shape})
    assert tuple(net(torch.zeros(shape))["out"].shape) == want


def test_reshape_count_mismatch_is_an_error():
    with pytest.raises(CaffeError, match="Reshape"):
        build('type: "Reshape" reshape_param { shape { dim: 5 dim: -1 } }', {"data": (2, 3)})


@pytest.mark.parametrize("mode,ignore", [("VALID", None), ("VALID", 2), ("FULL", 2), ("BATCH_SIZE", None),
                                         ("NONE", 1)])
def test_softmax_with_loss_normalisation(mode, ignore):
    ign = f"ignore_label: {ignore}" if ignore is not None else ""
    net = build(f'type: "SoftmaxWithLoss" loss_param {{ normalization: {mode} {ign} }}',
                {"data": (4, 5, 2, 3), "label": (4, 1, 2, 3)}, bottoms=("data", "label"))
    x = x64((4, 5, 2, 3))
    lab = torch.from_numpy(np.random.default_rng(1).integers(0, 5, (4, 1, 2, 3)).astype(np.float32))
    got = float(net(data=x, label=lab)["out"])
    want = ref.softmax_loss(x.double().numpy(), lab.numpy(), ignore, mode)
    assert abs(got - want) < 1e-5 * max(1, abs(want))


def test_softmax_with_loss_legacy_normalize_false_is_batch_size():
    net = build('type: "SoftmaxWithLoss" loss_param { normalize: false }',
                {"data": (2, 3, 4), "label": (2, 4)}, bottoms=("data", "label"))
    x, lab = x64((2, 3, 4)), torch.ones(2, 4)
    assert abs(float(net(data=x, label=lab)["out"]) -
               ref.softmax_loss(x.double().numpy(), lab.numpy(), None, "BATCH_SIZE")) < 1e-5


@pytest.mark.parametrize("k,ignore", [(1, None), (2, None), (3, 0)])
def test_accuracy_top_k_with_ties(k, ignore):
    ign = f"ignore_label: {ignore}" if ignore is not None else ""
    net = build(f'type: "Accuracy" accuracy_param {{ top_k: {k} {ign} }}',
                {"data": (6, 4), "label": (6,)}, bottoms=("data", "label"))
    scores = torch.tensor([[1, 1, 1, 1], [0, 2, 1, 3], [5, 4, 3, 2], [0, 0, 1, 0], [2, 2, 0, 0],
                           [1, 2, 3, 4]], dtype=torch.float32)
    labels = torch.tensor([2, 1, 0, 0, 1, 0], dtype=torch.float32)
    got = float(net(data=scores, label=labels)["out"])
    assert abs(got - ref.accuracy(scores.numpy(), labels.numpy(), k, ignore)) < 1e-7


def test_euclidean_loss():
    net = build('type: "EuclideanLoss"', {"data": (3, 4), "y": (3, 4)}, bottoms=("data", "y"))
    a, b = x64((3, 4)), x64((3, 4), seed=2)
    assert abs(float(net(data=a, y=b)["out"]) - float(((a - b) ** 2).sum() / 6)) < 1e-5


def test_dropout_scales_in_training_and_is_identity_in_testing():
    net = build('type: "Dropout" dropout_param { dropout_ratio: 0.25 }', {"data": (200, 50)})
    x = torch.ones(200, 50)
    assert torch.equal(net.eval()(x)["out"], x)
    y = net.train()(x)["out"]
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))
    assert abs((y == 0).float().mean().item() - 0.25) < 0.03


def test_crop_single_offset_applies_to_all_axes():
    net = build('type: "Crop" crop_param { axis: 1 offset: 1 }', {"data": (2, 4, 6, 6), "r": (2, 2, 3, 3)},
                bottoms=("data", "r"))
    x = x64((2, 4, 6, 6))
    assert torch.equal(net(data=x, r=torch.zeros(2, 2, 3, 3))["out"], x[:, 1:3, 1:4, 1:4])


def test_deconvolution_weight_layout_group():
    net = build('type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 group: 2 }',
                {"data": (1, 6, 4, 4)})
    assert tuple(net.layer("L").weight.shape) == (6, 2, 3, 3)
    assert tuple(net.blob_shapes["out"]) == (1, 4, 9, 9)


def test_silence_consumes_blobs_so_they_are_not_outputs():
    net = build('type: "Silence"', {"data": (2, 3), "other": (2,)}, tops=(), bottoms=("other",))
    assert net.output_names == ["data"]
    assert list(net(data=torch.zeros(2, 3), other=torch.zeros(2))) == ["data"]
