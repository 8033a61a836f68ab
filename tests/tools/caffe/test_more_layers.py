"""The rest of BVLC's layer registry, each against a float64 transcription of its .cpp loops (forward and
Caffe's backward) and torch.autograd.gradcheck where Caffe's backward is the true derivative.
Tolerances: 1e-5 on float32 forward values of O(1); gradcheck at its float64 defaults."""
import math

import numpy as np
import pytest
import torch

from tools.run.errors import CaffeError

from .test_caffe_edges import one

RNG = np.random.default_rng(0)


def f32(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def grads(net, wrt, **inputs):
    """Gradients of the net's objective (or its output's sum) for the inputs named in `wrt`."""
    xs = {k: v.clone().requires_grad_(k in wrt) for k, v in inputs.items()}
    net.objective(**xs).backward() if net.loss_weights else next(iter(net(**xs).values())).sum().backward()
    return {k: xs[k].grad for k in wrt}


def test_argmax_per_sample_and_along_an_axis():  # argmax_layer.cpp
    x = np.array([[3, 1, 3, 2], [0, 5, 5, 1]], np.float32)
    net = one('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', {"data": (2, 4)})
    out = net(f32(x))["out"]
    assert out.shape == (2, 2, 2)  # (N, index/value, top_k): at least 3 axes
    assert out[:, 0].tolist() == [[2, 0], [2, 1]] and out[:, 1].tolist() == [[3, 3], [5, 5]]  # ties: larger index
    along = one('type: "ArgMax" argmax_param { axis: 0 }', {"data": (2, 4)})(f32(x))["out"]
    assert along.tolist() == [[0, 1, 1, 0]]  # column 2: 3 vs 5
    with pytest.raises(CaffeError, match="no backward"):
        grads(net, ["data"], data=f32(x))


def test_embed_and_its_gradient():  # embed_layer.cpp
    net = one('type: "Embed" embed_param { num_output: 3 input_dim: 5 weight_filler { type: "gaussian" } '
              'bias_filler { type: "constant" value: 0.5 } }', {"data": (2, 2)})
    w = net.layer("L").weight.detach().numpy()
    idx = np.array([[4, 0], [2, 4]], np.float32)
    out = net(f32(idx))["out"].detach().numpy()
    assert out.shape == (2, 2, 3) and np.allclose(out, w[idx.astype(int)] + 0.5)
    net(f32(idx))["out"].sum().backward()
    want = np.zeros_like(w)
    for i in idx.astype(int).ravel():
        want[i] += 1
    assert np.allclose(net.layer("L").weight.grad.numpy(), want)
    with pytest.raises(CaffeError, match="whole numbers"):
        net(f32([[5, 0], [0, 0]]))


def test_batch_reindex_gathers_and_adds_gradients():  # batch_reindex_layer.cpp
    net = one('type: "BatchReindex"', {"data": (3, 2), "idx": (4,)}, bottoms=("data", "idx"))
    x = f32(RNG.standard_normal((3, 2)))
    idx = f32([2, 0, 2, 1])
    assert torch.equal(net(data=x, idx=idx)["out"], x[[2, 0, 2, 1]])
    assert grads(net, ["data"], data=x, idx=idx)["data"][:, 0].tolist() == [1, 1, 2]


def test_tile_copies_the_block_from_its_axis():  # tile_layer.cpp
    net = one('type: "Tile" tile_param { axis: 1 tiles: 3 }', {"data": (2, 2, 2)})
    x = f32(np.arange(8).reshape(2, 2, 2))
    out = net(x)["out"].numpy()
    want = np.stack([np.concatenate([x[i].numpy()] * 3, 0) for i in range(2)])
    assert out.shape == (2, 6, 2) and np.array_equal(out, want)
    assert torch.autograd.gradcheck(lambda t: net.layer("L").double()(t)[0], (torch.randn(2, 2, 2, dtype=torch.float64, requires_grad=True),))


def test_parameter_is_a_zeroed_learnable_top():  # parameter_layer.hpp
    from .test_caffe_edges import net_of
    net = net_of('layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }')
    out = net(outputs=["p"])["p"]
    assert out.shape == (2, 3) and bool((out == 0).all()) and out.requires_grad


@pytest.mark.parametrize("op,axis", [("SUM", 0), ("ASUM", 1), ("SUMSQ", 2), ("MEAN", 1)])
def test_reduction(op, axis):  # reduction_layer.cpp
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    x[0, 0, 0] = 0.0  # ASUM's gradient at 0 is sign(0) = 0
    net = one(f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: 1.5 }}', {"data": (2, 3, 4)})
    flat = x.reshape(*x.shape[:axis], -1).astype(np.float64)
    want = {"SUM": flat.sum(-1), "ASUM": np.abs(flat).sum(-1), "SUMSQ": (flat ** 2).sum(-1),
            "MEAN": flat.mean(-1)}[op] * 1.5
    out = net(f32(x))["out"]
    assert tuple(out.shape) == x.shape[:axis] and np.allclose(out.detach().numpy(), want, atol=1e-5)
    g = grads(net, ["data"], data=f32(x))["data"].numpy().astype(np.float64)
    dim = flat.shape[-1]
    gwant = {"SUM": np.ones_like(x), "ASUM": np.sign(x), "SUMSQ": 2 * x, "MEAN": np.full_like(x, 1 / dim)}[op] * 1.5
    assert np.allclose(g, gwant, atol=1e-5)


def test_im2col_is_caffes_column_layout():  # im2col.cpp: c * kh * kw + i * kw + j
    net = one('type: "Im2col" convolution_param { kernel_size: 2 stride: 1 pad: 1 dilation: 2 }', {"data": (1, 2, 4, 4)})
    x = RNG.standard_normal((1, 2, 4, 4)).astype(np.float32)
    out = net(f32(x))["out"].numpy()
    kh = kw = 2
    pad, dil = 1, 2
    oh = (4 + 2 * pad - (dil * (kh - 1) + 1)) + 1
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    want = np.zeros((1, 2 * kh * kw, oh, oh), np.float32)
    for c in range(2):
        for i in range(kh):
            for j in range(kw):
                want[0, c * kh * kw + i * kw + j] = xp[0, c, i * dil:i * dil + oh, j * dil:j * dil + oh]
    assert out.shape == want.shape and np.array_equal(out, want)


def test_multinomial_logistic_loss_and_its_clamped_gradient():  # multinomial_logistic_loss_layer.cpp
    net = one('type: "MultinomialLogisticLoss"', {"data": (2, 3), "label": (2,)}, bottoms=("data", "label"))
    p = f32([[0.2, 0.5, 0.3], [0.0, 0.4, 0.6]])
    label = f32([1, 0])
    loss = float(net(data=p, label=label)["out"])
    assert loss == pytest.approx(-(math.log(0.5) + math.log(1e-20)) / 2, rel=1e-6)
    g = grads(net, ["data"], data=p, label=label)
    assert np.allclose(g["data"].numpy(), [[0, -1 / 0.5 / 2, 0], [-1 / 1e-20 / 2, 0, 0]], rtol=1e-6)


@pytest.mark.parametrize("extra,norm", [("", 2.0), ("loss_param { ignore_label: -1 normalization: VALID }", 5.0)])
def test_sigmoid_cross_entropy_loss(extra, norm):  # sigmoid_cross_entropy_loss_layer.cpp
    net = one(f'type: "SigmoidCrossEntropyLoss" {extra}', {"data": (2, 3), "t": (2, 3)}, bottoms=("data", "t"))
    x = np.array([[0.0, 30.0, -2.0], [1.5, -40.0, 0.3]], np.float32)
    t = np.array([[1, 0, 0.5], [0, 1, -1 if extra else 1]], np.float32)
    valid = t != -1 if extra else np.ones_like(t, bool)
    x64, t64 = x.astype(np.float64), t.astype(np.float64)
    pos = (x64 >= 0).astype(np.float64)
    want = -(np.where(valid, x64 * (t64 - pos) - np.log1p(np.exp(x64 - 2 * x64 * pos)), 0)).sum() / norm
    assert float(net(data=f32(x), t=f32(t))["out"]) == pytest.approx(want, rel=1e-6)
    g = grads(net, ["data"], data=f32(x), t=f32(t))["data"].numpy()
    assert np.allclose(g, np.where(valid, 1 / (1 + np.exp(-x64)) - t64, 0) / norm, atol=1e-7)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss(norm):  # hinge_loss_layer.cpp
    net = one(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', {"data": (3, 4), "label": (3,)},
              bottoms=("data", "label"))
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    label = np.array([0, 3, 1])
    d = x.astype(np.float64).copy()
    d[np.arange(3), label] *= -1
    d = np.maximum(0, 1 + d)
    want = (d.sum() if norm == "L1" else (d * d).sum()) / 3
    assert float(net(data=f32(x), label=f32(label))["out"]) == pytest.approx(want, rel=1e-6)
    g = np.sign(d) if norm == "L1" else 2 * d
    g[np.arange(3), label] *= -1
    assert np.allclose(grads(net, ["data"], data=f32(x), label=f32(label))["data"].numpy(), g / 3, atol=1e-6)


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss(legacy):  # contrastive_loss_layer.cpp, forward and its backward (1e-4 in d)
    net = one(f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: 2 legacy_version: {str(legacy).lower()} }}',
              {"a": (4, 3), "b": (4, 3), "y": (4,)}, bottoms=("a", "b", "y"))
    a, b = RNG.standard_normal((4, 3)).astype(np.float32), RNG.standard_normal((4, 3)).astype(np.float32)
    y = np.array([1, 0, 0, 1], np.float32)
    diff = (a - b).astype(np.float64)
    d2 = (diff ** 2).sum(1)
    loss, ga = 0.0, np.zeros_like(diff)
    for i in range(4):
        if y[i]:
            loss += d2[i]
            ga[i] = diff[i] / 4
        elif legacy:
            loss += max(2 - d2[i], 0)
            ga[i] = -diff[i] / 4 if 2 - d2[i] > 0 else 0
        else:
            gap = 2 - math.sqrt(d2[i])
            loss += max(gap, 0) ** 2
            ga[i] = -gap / (math.sqrt(d2[i]) + 1e-4) * diff[i] / 4 if gap > 0 else 0
    assert float(net(a=f32(a), b=f32(b), y=f32(y))["out"]) == pytest.approx(loss / 8, rel=1e-6)
    g = grads(net, ["a", "b"], a=f32(a), b=f32(b), y=f32(y))
    assert np.allclose(g["a"].numpy(), ga, atol=1e-6) and np.allclose(g["b"].numpy(), -ga, atol=1e-6)


def test_filter_keeps_the_selected_items():  # filter_layer.cpp
    net = one('type: "Filter"', {"data": (4, 2), "sel": (4,)}, bottoms=("data", "sel"))
    x = f32(RNG.standard_normal((4, 2)))
    out = net(data=x, sel=f32([1, 0, 0, 1]))["out"]
    assert torch.equal(out, x[[0, 3]])
    g = grads(net, ["data"], data=x, sel=f32([1, 0, 0, 1]))["data"]
    assert g[:, 0].tolist() == [1, 0, 0, 1]


@pytest.mark.parametrize("height,pool", [(1, "MAX"), (3, "MAX"), (2, "AVE")])
def test_spp_against_caffes_pyramid(height, pool):  # spp_layer.cpp GetPoolingParam
    from . import reference as ref
    net = one(f'type: "SPP" spp_param {{ pyramid_height: {height} pool: {pool} }}', {"data": (2, 3, 13, 11)})
    x = RNG.standard_normal((2, 3, 13, 11)).astype(np.float32)
    parts = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = math.ceil(13 / bins), math.ceil(11 / bins)
        ph, pw = (kh * bins - 13 + 1) // 2, (kw * bins - 11 + 1) // 2
        parts.append(ref.pool(x.astype(np.float64), pool.lower(), (kh, kw), (kh, kw), (ph, pw)))
    out = net(f32(x))["out"].numpy()
    want = parts[0] if height == 1 else np.concatenate([p.reshape(2, -1) for p in parts], 1)
    assert out.shape == want.shape and np.allclose(out, want, atol=1e-5)
    if height == 3:
        assert out.shape == (2, 3 * (1 + 4 + 16))


def test_lstm_unit_against_caffes_loop():  # lstm_unit_layer.cpp
    net = one('type: "LSTMUnit"', {"c": (1, 3, 2), "x": (1, 3, 8), "cont": (1, 3)}, bottoms=("c", "x", "cont"),
              tops=("c_out", "h"))
    c, x = RNG.standard_normal((1, 3, 2)), RNG.standard_normal((1, 3, 8))
    cont = np.array([[1.0, 0.0, 0.5]])
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    want_c, want_h = np.zeros_like(c), np.zeros_like(c)
    for n in range(3):
        for d in range(2):
            i, o = sig(x[0, n, d]), sig(x[0, n, 4 + d])
            f = 0 if cont[0, n] == 0 else cont[0, n] * sig(x[0, n, 2 + d])
            g = 2 * sig(2 * x[0, n, 6 + d]) - 1
            want_c[0, n, d] = f * c[0, n, d] + i * g
            want_h[0, n, d] = o * (2 * sig(2 * want_c[0, n, d]) - 1)
    out = net(c=f32(c), x=f32(x), cont=f32(cont), outputs=["c_out", "h"])
    assert np.allclose(out["c_out"].numpy(), want_c, atol=1e-6) and np.allclose(out["h"].numpy(), want_h, atol=1e-6)
    layer = net.layer("L").double()
    cont64 = torch.tensor(cont)
    assert torch.autograd.gradcheck(lambda a, b: layer(a, b, cont64),
                                    (torch.tensor(c, requires_grad=True), torch.tensor(x, requires_grad=True)))


@pytest.mark.parametrize("from_file", [True, False])
def test_infogain_loss(tmp_path, from_file):  # infogain_loss_layer.cpp (softmax inside, H from a file or bottom)
    from tools.caffe import caffe_pb2 as pb
    h = RNG.uniform(0, 1, (3, 3)).astype(np.float32)
    x = RNG.standard_normal((4, 3)).astype(np.float32)
    label = np.array([0, 2, 1, 2], np.float32)
    if from_file:
        (tmp_path / "H.binaryproto").write_bytes(
            pb.BlobProto(shape=pb.BlobShape(dim=[1, 1, 3, 3]), data=h.ravel().tolist()).SerializeToString())
        net = one(f'type: "InfogainLoss" infogain_loss_param {{ source: "{tmp_path / "H.binaryproto"}" }} '
                  "loss_param { ignore_label: 1 }", {"data": (4, 3), "label": (4,)}, bottoms=("data", "label"))
        inputs = dict(data=f32(x), label=f32(label))
    else:
        net = one('type: "InfogainLoss" loss_param { ignore_label: 1 }', {"data": (4, 3), "label": (4,), "H": (3, 3)},
                  bottoms=("data", "label", "H"))
        inputs = dict(data=f32(x), label=f32(label), H=f32(h))
    x64, h64 = x.astype(np.float64), h.astype(np.float64)
    p = np.exp(x64 - x64.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss, g, valid = 0.0, np.zeros_like(p), 0
    for i, lab in enumerate(label.astype(int)):
        if lab == 1:
            continue
        valid += 1
        loss -= (h64[lab] * np.log(np.maximum(p[i], 1e-20))).sum()
        g[i] = p[i] * h64[lab].sum() - h64[lab]
    assert float(net(**inputs)["out"]) == pytest.approx(loss / valid, rel=1e-5)
    assert np.allclose(grads(net, ["data"], **inputs)["data"].numpy(), g / valid, atol=1e-6)


def _sig(v):
    return 1 / (1 + np.exp(-v))


def _recurrent(kind, static, expose):
    t, n, d, h = 3, 2, 4, 5
    shapes = {"x": (t, n, d), "cont": (t, n)}
    bottoms = ["x", "cont"]
    if static:
        shapes["xs"] = (n, 3)
        bottoms.append("xs")
    states = (["h0", "c0"] if kind == "LSTM" else ["h0"]) if expose else []
    for s in states:
        shapes[s] = (1, n, h)
        bottoms.append(s)
    tops = ["out"] + ([s.replace("0", "T") for s in states] if expose else [])
    net = one(f'type: "{kind}" recurrent_param {{ num_output: {h} expose_hidden: {str(expose).lower()} '
              'weight_filler { type: "uniform" min: -0.5 max: 0.5 } bias_filler { type: "uniform" min: -0.5 max: 0.5 } }',
              shapes, bottoms=tuple(bottoms), tops=tuple(tops))
    inputs = {k: RNG.standard_normal(v) for k, v in shapes.items()}
    inputs["cont"] = np.array([[0, 0], [1, 1], [1, 0]], np.float64)
    return net, inputs, tops


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("static,expose", [(False, False), (True, True)])
def test_recurrent_layers_as_caffe_unrolls_them(kind, static, expose):  # lstm_layer.cpp, rnn_layer.cpp
    net, inputs, tops = _recurrent(kind, static, expose)
    layer = net.layer("L")
    w = {name: getattr(layer, name).detach().double().numpy() for name in layer.blob_names}
    want_blobs = (["W_xc", "b_c"] + (["W_xc_static"] if static else []) + ["W_hc"]) if kind == "LSTM" else \
        (["W_xh", "b_h"] + (["W_xh_static"] if static else []) + ["W_hh", "W_ho", "b_o"])
    assert list(layer.blob_names) == want_blobs
    x, cont = inputs["x"], inputs["cont"]
    h = inputs["h0"][0] if expose else np.zeros((2, 5))
    c = inputs["c0"][0] if expose and kind == "LSTM" else np.zeros((2, 5))
    outs = []
    for t in range(3):
        hc = cont[t][:, None] * h
        if kind == "LSTM":
            g = hc @ w["W_hc"].T + x[t] @ w["W_xc"].T + w["b_c"]
            if static:
                g = g + inputs["xs"] @ w["W_xc_static"].T
            i, f, o, gg = _sig(g[:, :5]), cont[t][:, None] * _sig(g[:, 5:10]), _sig(g[:, 10:15]), np.tanh(g[:, 15:])
            c = f * c + i * gg
            h = o * np.tanh(c)
            outs.append(h)
        else:
            pre = hc @ w["W_hh"].T + x[t] @ w["W_xh"].T + w["b_h"]
            if static:
                pre = pre + inputs["xs"] @ w["W_xh_static"].T
            h = np.tanh(pre)
            outs.append(np.tanh(h @ w["W_ho"].T + w["b_o"]))
    got = net(**{k: f32(v) for k, v in inputs.items()}, outputs=tops)
    assert np.allclose(got["out"].detach().numpy(), np.stack(outs), atol=1e-5)
    if expose:
        assert np.allclose(got["hT"].detach().numpy()[0], h, atol=1e-5)
    double = layer.double()
    names = list(inputs)
    wrt = [k for k in names if k != "cont"]
    args = {k: torch.tensor(v, requires_grad=k in wrt) for k, v in inputs.items()}
    fn = lambda *vs: double(*[dict(zip(wrt, vs)).get(k, args[k]) for k in names])[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(args[k] for k in wrt))


def test_hdf5_output_writes_its_bottoms(tmp_path):  # hdf5_output_layer.cpp
    import h5py
    path = tmp_path / "out" / "blobs.h5"
    net = one(f'type: "HDF5Output" hdf5_output_param {{ file_name: "{path}" }}', {"data": (2, 3), "label": (2,)},
              bottoms=("data", "label"), tops=())
    x, y = f32(RNG.standard_normal((2, 3))), f32([1, 0])
    net(data=x, label=y, outputs=[])
    with h5py.File(path, "r") as f:  # 4 axes, as Caffe's legacy num/channels/height/width write them
        assert f["data"].shape == (2, 3, 1, 1) and f["label"].shape == (2, 1, 1, 1)
        assert np.array_equal(f["data"][()].reshape(2, 3), x.numpy())
        assert np.array_equal(f["label"][()].ravel(), y.numpy())


def test_hdf5_output_never_overwrites_another_file(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    net = one(f'type: "HDF5Output" hdf5_output_param {{ file_name: "{precious}" }}', {"data": (2, 3), "label": (2,)},
              bottoms=("data", "label"), tops=())
    with pytest.raises(CaffeError, match="not an HDF5 file"):
        net(data=torch.zeros(2, 3), label=torch.zeros(2), outputs=[])
    assert precious.read_text() == "keep me"


GRADCHECK = [  # (layer text, input shapes, bottoms, which inputs to check, integer-valued inputs)
    ('type: "Reduction" reduction_param { operation: SUMSQ axis: 1 coeff: 0.5 }', {"data": (2, 3, 2)}, ("data",), {}),
    ('type: "Im2col" convolution_param { kernel_size: 2 stride: 2 pad: 1 }', {"data": (1, 2, 4, 4)}, ("data",), {}),
    ('type: "BatchReindex"', {"data": (3, 2), "idx": (4,)}, ("data", "idx"), {"idx": [2, 0, 2, 1]}),
    ('type: "Filter"', {"data": (4, 2), "sel": (4,)}, ("data", "sel"), {"sel": [1, 0, 1, 1]}),
    ('type: "SPP" spp_param { pyramid_height: 2 pool: AVE }', {"data": (1, 2, 5, 5)}, ("data",), {}),
    ('type: "HingeLoss" hinge_loss_param { norm: L2 }', {"data": (3, 4), "label": (3,)}, ("data", "label"),
     {"label": [1, 0, 3]}),
    ('type: "SigmoidCrossEntropyLoss"', {"data": (2, 3), "t": (2, 3)}, ("data", "t"), {"t": [[1, 0, 1], [0, 0, 1]]}),
    ('type: "MultinomialLogisticLoss"', {"data": (2, 3), "label": (2,)}, ("data", "label"), {"label": [2, 0]}),
    ('type: "InfogainLoss"', {"data": (2, 3), "label": (2,), "H": (3, 3)}, ("data", "label", "H"),
     {"label": [2, 0], "H": np.eye(3) + 0.5}),
]


@pytest.mark.parametrize("body,shapes,bottoms,fixed", GRADCHECK, ids=[g[0].split('"')[1] for g in GRADCHECK])
def test_gradcheck(body, shapes, bottoms, fixed):
    layer = one(body, shapes, bottoms=bottoms).layer("L").double()
    args = {}
    for name, shape in shapes.items():
        if name in fixed:
            args[name] = torch.tensor(np.asarray(fixed[name], np.float64))
        elif "MultinomialLogistic" in body:
            args[name] = torch.tensor(RNG.uniform(0.2, 0.9, shape), requires_grad=True)
        else:
            args[name] = torch.tensor(RNG.standard_normal(shape), requires_grad=True)
    free = [k for k in bottoms if k not in fixed]
    fn = lambda *vs: layer(*[dict(zip(free, vs)).get(k, args[k]) for k in bottoms])[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(args[k] for k in free))
