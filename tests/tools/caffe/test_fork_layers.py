"""What Noroozi's jigsaw fork needs from tools: MVN with Caffe's backward, its MergeData layer,
repeated layer names as Caffe treats them, and its field 140 (merge_data_param) in binary files.

Tolerances: MVN forward 1e-5 relative to a float64 transcription of mvn_layer.cpp
(plus float32 cancellation without variance normalisation); its backward
against the same transcription's formula 1e-4 relative (float32 sums over 2,352 values)."""
import warnings

import numpy as np
import pytest
import torch

from tools.caffe import caffe_pb2 as pb
from tools import load_caffe_net
from tools.caffe.caffemodel import read_caffemodel, write_caffemodel
from tools.run.errors import CaffeError
from tools.caffe.layers.normalization import _MVNFunction
from tools.caffe.prototxt import read_net

from .helpers import input_layer


def build(body, shapes, tops=("out",), bottoms=("data",), seed=0):
    text = input_layer(shapes) + 'layer { name: "L" ' + body + " " + " ".join(
        f'bottom: "{b}"' for b in bottoms) + " " + " ".join(f'top: "{t}"' for t in tops) + " }"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_caffe_net(text, seed=seed)


def _mvn_reference(x, dy, across, normalize_variance, eps):
    """mvn_layer.cpp in float64: Forward_cpu, then Backward_cpu's five BLAS steps."""
    n, c = x.shape[:2]
    rows = n if across else n * c
    x, dy = x.reshape(rows, -1), dy.reshape(rows, -1)
    dim = x.shape[1]
    top = x - x.mean(1, keepdims=True)
    if not normalize_variance:
        return top, dy - dy.mean(1, keepdims=True)
    var = np.sqrt((top ** 2).mean(1, keepdims=True)) + eps
    top = top / var
    bottom_diff = (top * dy).sum(1, keepdims=True) * top + dy.sum(1, keepdims=True)
    bottom_diff = dy - bottom_diff / dim
    return top, bottom_diff / var


@pytest.mark.parametrize("across,normalize_variance,eps", [(True, True, 1e-9), (False, True, 1e-9),
                                                           (True, False, 1e-9), (False, True, 0.5)])
def test_mvn_forward_and_caffes_backward(across, normalize_variance, eps):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 3, 28, 28)) * 40 + 100).astype(np.float32).astype(np.float64)
    dy = rng.standard_normal(x.shape).astype(np.float32).astype(np.float64)
    net = build(f'type: "MVN" mvn_param {{ across_channels: {str(across).lower()} normalize_variance: '
                f"{str(normalize_variance).lower()} eps: {eps} }}", {"data": x.shape})
    xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    out = net(xt)["out"]
    out.backward(torch.tensor(dy, dtype=torch.float32))
    want_top, want_diff = _mvn_reference(x, dy, across, normalize_variance, eps)
    got = out.detach().double().numpy().reshape(want_top.shape)
    # float32 subtracts a mean of ~100: cancellation costs up to a few ulps of 100 (~1e-5)
    slack = 0 if normalize_variance else 4e-7 * np.abs(x).max()
    assert np.all(np.abs(got - want_top) <= 1e-5 * np.maximum(1, np.abs(want_top)) + slack)
    gd = xt.grad.double().numpy().reshape(want_diff.shape)
    assert np.abs(gd - want_diff).max() <= 1e-4 * max(1, np.abs(want_diff).max())


def test_mvn_backward_is_the_true_gradient_at_eps_zero():
    x = torch.randn(4, 30, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _MVNFunction.apply(t, True, 0.0), (x,))
    assert torch.autograd.gradcheck(lambda t: _MVNFunction.apply(t, False, 0.0), (x,))


def test_mvn_of_a_constant_tile_is_zero_not_nan():
    net = build('type: "MVN" mvn_param { across_channels: true }', {"data": (2, 3, 4, 4)})
    out = net(torch.full((2, 3, 4, 4), 9.0))["out"]
    assert torch.isfinite(out).all() and out.abs().max() == 0


def _merge_net(seed=0, low=0, high=3):
    tops = [f"t{i}" for i in range(9)] + ["sub_num"]
    bottoms = [f"a{i}" for i in range(9)] + [f"b{i}" for i in range(9)]
    shapes = {b: (5, 3, 4, 4) for b in bottoms}
    return build(f'type: "MergeData" merge_data_param {{ min_substitute: {low} max_substitute: {high} }}',
                 shapes, tops=tops, bottoms=bottoms, seed=seed), bottoms


def test_mergedata_follows_its_plan_and_counts_substitutions():
    net, bottoms = _merge_net()
    g = torch.Generator().manual_seed(0)
    inputs = {b: torch.randn(5, 3, 4, 4, generator=g) for b in bottoms}
    plan = torch.full((5, 9), -1)
    plan[0, 2], plan[0, 7] = 5, 0
    plan[3, 8] = 8
    net.layer("L").plan = plan
    out = net(**inputs, outputs="all")
    for n in range(5):
        for i in range(9):
            src = inputs[f"b{plan[n, i]}"] if plan[n, i] >= 0 else inputs[f"a{i}"]
            assert torch.equal(out[f"t{i}"][n], src[n])
    assert out["sub_num"].flatten().tolist() == [2, 0, 0, 1, 0]


def test_mergedata_draws_are_seeded_distinct_and_in_range():
    net_a, bottoms = _merge_net(seed=3)
    net_b, _ = _merge_net(seed=3)
    plans = [net_a.layer("L").draw_plan(4000), net_b.layer("L").draw_plan(4000)]
    assert torch.equal(*plans)  # the net's seed fixes the draws
    counts = (plans[0] >= 0).sum(1)
    assert set(counts.tolist()) == {0, 1, 2}  # rand() % 3 + 0
    for row in plans[0][:300]:
        used = row[row >= 0].tolist()
        assert len(used) == len(set(used))
    with pytest.raises(CaffeError, match="max_substitute 0"):
        _merge_net(high=0)


TWO_FC = (input_layer({"data": (2, 4)})
          + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "a" inner_product_param { num_output: 3 } }'
          + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "b" inner_product_param { num_output: 3 } }')


def test_repeated_layer_names_as_caffe_has_them(tmp_path):
    """Caffe's name index keeps the last layer of a name (layer_by_name); CopyTrainedLayersFrom
    copies a source layer's weights into the first layer of that name (net.cpp)."""
    text = TWO_FC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(text, seed=0)
    first, last = net.layer_by_key(net.first_keys["fc"]), net.layer("fc")
    assert first is not last and net.layer_by_key(net.layer_keys["fc"]) is last
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    named = [("fc", [w, np.ones(3, np.float32)])]
    net.load_blobs(named)
    assert np.array_equal(first.weight.detach().numpy(), w)
    assert not np.array_equal(last.weight.detach().numpy(), w)
    assert [m for m in net.report.missing] == [("fc", "weight"), ("fc", "bias")]  # the second 'fc'


def _fork_merge_layer_bytes():
    """A MergeData LayerParameter as the fork serialises it: merge_data_param is field 140."""
    inner = b"\x08\x01\x10\x03"                          # min_substitute 1, max_substitute 3
    head = pb.LayerParameter(name="merge", type="MergeData").SerializeToString()
    return head + b"\xe2\x08" + bytes([len(inner)]) + inner  # key (140 << 3) | 2 = 0x462


def test_a_caffemodel_written_by_the_fork_keeps_merge_data_param(tmp_path):
    elu = pb.LayerParameter(name="elu", type="ELU")
    elu.elu_param.alpha = 0.5
    layer_bytes = [_fork_merge_layer_bytes(), elu.SerializeToString()]
    body = b"".join(b"\xa2\x06" + bytes([len(b)]) + b for b in layer_bytes)  # NetParameter.layer = 100
    path = tmp_path / "fork.caffemodel"
    path.write_bytes(pb.NetParameter(name="n").SerializeToString() + body)
    net, _ = read_caffemodel(str(path))
    merge, elu_read = net.layer
    assert (merge.merge_data_param.min_substitute, merge.merge_data_param.max_substitute) == (1, 3)
    assert not merge.HasField("elu_param")
    assert elu_read.elu_param.alpha == 0.5 and not elu_read.HasField("merge_data_param")
    out = tmp_path / "back.caffemodel"
    write_caffemodel(str(out), net, {})
    raw = out.read_bytes()
    assert b"\xe2\x08\x04\x08\x01\x10\x03" in raw          # written back under the fork's number
    again, _ = read_caffemodel(str(out))
    assert again.layer[0].merge_data_param.max_substitute == 3


def test_fork_text_fields_parse_by_name():
    net = read_net('layer { name: "d" type: "Data" top: "d" transform_param { hash_file: "p.bin" '
                   'siamese_size: 9 patch_size: 64 jitter_size: 21 } data_param { batch_size: 2 rand_jump: 8 } }'
                   'layer { name: "m" type: "MergeData" merge_data_param { max_substitute: 3 } }')
    assert net.layer[0].data_param.rand_jump == 8 and net.layer[1].merge_data_param.max_substitute == 3
    assert pb.TransformationParameter().siamese_size == 1  # the fork's default


def test_repeated_names_round_trip_through_a_caffemodel_as_caffe_would(tmp_path):
    """Each layer is written with its own blobs (Caffe's ToProto); reading copies every source layer
    into the first layer of its name, so the later one's weights end there (CopyTrainedLayersFrom)."""
    from tools import save_caffe_net
    text = TWO_FC
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(text, seed=0)
        first, second = net.layer_by_key(net.first_keys["fc"]), net.layer("fc")
        with torch.no_grad():
            first.weight.fill_(1.0)
            second.weight.fill_(2.0)
        save_caffe_net(net, str(tmp_path / "n.prototxt"), str(tmp_path / "n.caffemodel"))
        _, named = read_caffemodel(str(tmp_path / "n.caffemodel"))
        assert [(n, float(b[0].data.flat[0])) for n, b in named if b] == [("fc", 1.0), ("fc", 2.0)]
        back = load_caffe_net(str(tmp_path / "n.prototxt"), str(tmp_path / "n.caffemodel"))
    assert back.layer_by_key(back.first_keys["fc"]).weight.eq(2.0).all()
