"""A ResNet trunk in Caffe's form (jigsaw/trunk_caffe.py): tools.caffe rebuilds it with the trunk's features at the
sizes where Caffe's default pooling would round up (32 px: 9 rows, not 8), and the real BVLC Caffe runs it alike."""
import numpy as np
import pytest
import torch

from jigsaw.trunk_caffe import CHECK_TOLERANCE, check_trunk_net, trunk_net, write_trunk_caffe
from tools.caffe import caffe_pb2 as pb
from tools.caffe.net import load_caffe_net
from tools.nets.trunks import build_trunk
from tools.run.errors import UserError

pytestmark = pytest.mark.needs_torchvision


def _trained_statistics(arch, width, size):
    """A trunk whose BatchNorms hold statistics other than 0 / 1 and whose scales are not 1."""
    trunk = build_trunk(arch, width).train()
    with torch.no_grad():
        trunk(torch.randn(6, 3, size, size) * 2 + 0.5)
        for m in trunk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return trunk.eval()


@pytest.mark.parametrize("arch,width,size", [("resnet18", 0.25, 32), ("resnet18", 0.125, 224),
                                             ("resnet50", 0.125, 32), ("resnet50", 0.125, 33)])
def test_the_caffe_form_gives_the_trunks_features(tmp_path, arch, width, size):
    trunk = _trained_statistics(arch, width, size)
    err = write_trunk_caffe(trunk, size, str(tmp_path / "t.prototxt"), str(tmp_path / "t.caffemodel"))
    assert err <= CHECK_TOLERANCE
    net = load_caffe_net(str(tmp_path / "t.prototxt"), str(tmp_path / "t.caffemodel"))
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        stem = net(data=x, outputs=["stem"])["stem"]
        want = trunk.net.maxpool(trunk.net.relu(trunk.net.bn1(trunk.net.conv1(x))))
    assert stem.shape == want.shape and torch.allclose(stem, want, atol=1e-5)


def test_caffes_default_rounding_would_give_nine_rows_at_32_px_and_the_check_says_so(tmp_path):
    trunk = _trained_statistics("resnet18", 0.25, 32)
    net, _ = trunk_net(trunk, 32)
    write_trunk_caffe(trunk, 32, str(tmp_path / "t.prototxt"), str(tmp_path / "t.caffemodel"))
    pool1 = next(layer for layer in net.layer if layer.name == "pool1")
    assert pool1.pooling_param.round_mode == pb.PoolingParameter.FLOOR
    pool1.pooling_param.ClearField("round_mode")  # Caffe's default: CEIL
    built = load_caffe_net(net, str(tmp_path / "t.caffemodel"))
    assert built(data=torch.randn(1, 3, 32, 32), outputs=["stem"])["stem"].shape[-2:] == (9, 9)
    with pytest.raises(UserError, match="differs from the trunk"):  # same pooled shape, other values
        check_trunk_net(trunk, net, str(tmp_path / "t.caffemodel"), 32)


def test_only_resnets_are_written():
    with pytest.raises(UserError, match="resnet18 and resnet50"):
        trunk_net(build_trunk("mobilenet_v3_large", 0.5), 32)


def test_the_real_caffe_runs_the_written_trunk_alike(tmp_path):
    from tests.tools.caffe.real_caffe import CAFFE_PY, CAFFE_PYTHON, TOLERANCE, run_caffe
    if not (CAFFE_PY and CAFFE_PYTHON):
        pytest.skip("set CAFFE_PY and CAFFE_PYTHON (../shared/caffe/build.sh prints them)")
    trunk = _trained_statistics("resnet18", 0.25, 32)
    write_trunk_caffe(trunk, 32, str(tmp_path / "t.prototxt"), str(tmp_path / "t.caffemodel"))
    x = torch.randn(1, 3, 32, 32)
    with open(tmp_path / "t.prototxt") as f:
        text = f.read()
    _, _, blobs = run_caffe(str(tmp_path), text, {"data": x.numpy()}, weights=str(tmp_path / "t.caffemodel"))
    with torch.no_grad():
        want = trunk(x).numpy()
    got = blobs["data/pool"].reshape(want.shape)
    assert blobs["data/stem"].shape[-2:] == (8, 8)
    assert np.abs(got - want).max() <= TOLERANCE * np.abs(want).max()
