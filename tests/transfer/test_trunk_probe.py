"""Probing a torchvision trunk: its BatchNorm statistics measured afresh on unlabelled training images, for the
pretrained net and its random twins alike, and the stages as the probe's layers."""
import csv
import os

import pytest
import torch
from torch import nn

from transfer.features import reestimate_batchnorm
from transfer.probe import ProbeConfig, probe

from .test_datasets import mnist_like

pytestmark = pytest.mark.needs_torchvision


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5))

    def features(self, x):
        return self.body(x).flatten(1)


def test_reestimated_statistics_are_those_of_the_first_images_and_the_net_ends_in_eval_mode():
    torch.manual_seed(0)
    net = _Net()
    net.body[1].running_mean.fill_(5.0)
    net.body[1].running_var.fill_(9.0)
    xs = torch.randn(10, 3, 8, 8) * 3 + 1
    loader = [(xs[:4], None), (xs[4:8], None), (xs[8:], None)]
    reestimate_batchnorm(net, loader, "cpu", images=7)
    with torch.no_grad():
        pre = net.body[0](xs[:7]).transpose(0, 1).flatten(1)
    # two batches (4 and 3 images), averaged per batch as momentum=None does: the mean of the batch means
    means = torch.stack([net.body[0](xs[:4]).transpose(0, 1).flatten(1).mean(1),
                         net.body[0](xs[4:7]).transpose(0, 1).flatten(1).mean(1)]).mean(0).detach()
    assert torch.allclose(net.body[1].running_mean, means, atol=1e-5)
    assert (net.body[1].running_mean - pre.mean(1)).abs().max() < 0.5
    assert not net.training and not net.body[1].training


def test_a_trunk_probe_reestimates_batchnorm_for_pretrained_and_twins(tmp_path):
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    tv = pytest.importorskip("torchvision")
    state = tv.models.resnet18().state_dict()
    weights = str(tmp_path / "r18.pth")
    torch.save(state, weights)
    cfg = ProbeConfig(dataset="fashion-mnist", data_root=root, model="resnet18", weights=weights,
                      out=str(tmp_path / "p"), random_seeds=2, protocols=("knn",), batch_size=16, progress=False,
                      input_size=32, bn_images=40)
    out = probe(cfg)
    with open(os.path.join(cfg.out, "knn.csv")) as f:
        layers = [r["layer"] for r in csv.DictReader(f)]
    assert layers[:5] == ["stem", "layer1", "layer2", "layer3", "layer4"] and out["knn"]
    import json
    nets = [json.load(open(os.path.join(cfg.out, "cache", d, "net.json")))
            for d in os.listdir(os.path.join(cfg.out, "cache"))]
    assert len(nets) == 3 and all(n["bn_images"] == 40 for n in nets)


def test_vissl_jigsaw_and_pirl_checkpoints_give_their_trunk(tmp_path):
    """VISSL's released checkpoints (classy_state_dict -> base_model -> model -> trunk, names under
    `_feature_blocks.`; heads beside it) and its converted trunks read as a torchvision ResNet-50."""
    from tools.nets.trunks import build_trunk
    from transfer.backbones import build_backbone
    source = build_trunk("resnet50", seed=3).torchvision_state()
    trunk = {f"_feature_blocks.{k}": v for k, v in source.items()}
    heads = {"0.clf.0.weight": torch.zeros(1000, 2048)}
    full = dict(phase_idx=3, iteration=10, type="consolidated",
                classy_state_dict=dict(base_model=dict(model=dict(trunk=trunk, heads=heads), meta={}), loss={}))
    for name, payload in (("jigsaw.torch", full), ("pirl.torch", dict(model_state_dict=trunk)),
                          ("trunk.pth", trunk)):
        torch.save(payload, tmp_path / name)
        backbone = build_backbone("resnet50", str(tmp_path / name))
        assert torch.equal(backbone.body.state_dict()["layer3.2.conv2.weight"], source["layer3.2.conv2.weight"])
