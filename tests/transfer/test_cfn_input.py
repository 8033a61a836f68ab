"""A CFN branch gets in transfer what it got in pretraining: BGR, 0-255, its recipe's normalisation."""
import json

import numpy as np
import pytest
import torch

from jigsaw.caffe_form import to_caffe
from jigsaw.cfn import CFN
from tools.run.checkpoint import save_checkpoint
from transfer.backbones import build_backbone
from transfer.data import loaders
from transfer.datasets import Split

COLOUR = (10, 200, 30)  # R, G, B


def _ckpt(path, recipe_name):
    cfn = CFN(8, width=0.125, seed=0)
    save_checkpoint(str(path), dict(model=cfn.state_dict(), widths=cfn.widths, iter=0, recipe=recipe_name,
                                    recipe_options={}, permutations=torch.zeros(0, 9, dtype=torch.long)))
    return str(path)


def _first_batch(preprocess):
    split = Split(np.full((4, 40, 40, 3), COLOUR, np.uint8), np.zeros(4, np.int64), ["only"])
    data, _ = loaders(dict(train=split, val=split, test=split), 64, 3, 4, preprocess=preprocess)
    return next(iter(data["test"]))[0]


def _mvn_x50(bgr):
    centred = np.array(bgr, float) - np.mean(bgr)  # MVN across channels: one mean and std per tile
    return tuple(centred / np.sqrt((centred ** 2).mean()) * 50)


@pytest.mark.parametrize("name,want", [("jps", (30 - 104, 200 - 117, 10 - 123)), ("paper", (0, 0, 0)),
                                       ("bbrattoli", (0, 0, 0)), ("jps++", _mvn_x50((30, 200, 10)))])
def test_constant_colour_image_through_each_recipe(tmp_path, name, want):
    backbone = build_backbone("cfn", _ckpt(tmp_path / "c.pt", name))
    assert backbone.record["recipe"] == name
    x = _first_batch(backbone.preprocess)
    assert x.shape == (4, 3, 64, 64)
    assert torch.allclose(x, torch.tensor(want, dtype=torch.float32)[None, :, None, None].expand_as(x), atol=1e-4)


def test_a_random_twin_and_a_caffemodel_get_the_jps_input(tmp_path):
    to_caffe(CFN(8, width=0.125, seed=0), str(tmp_path / "c.prototxt"), str(tmp_path / "c.caffemodel"))
    for weights in ("none", str(tmp_path / "c.caffemodel")):
        x = _first_batch(build_backbone("cfn", weights).preprocess)
        assert torch.allclose(x[0, :, 0, 0], torch.tensor([-74.0, 83.0, -113.0]), atol=1e-4), weights


def test_the_run_records_which_input_it_used(tmp_path):
    from transfer.finetune import FinetuneConfig, finetune
    from .test_datasets import mnist_like
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    ckpt = _ckpt(tmp_path / "c.pt", "jps")
    solver = 'type: "Adam" base_lr: 0.001 momentum: 0.9 lr_policy: "fixed"'
    for norm in ("backbone", "dataset"):
        out = tmp_path / norm
        finetune(FinetuneConfig(dataset="fashion-mnist", data_root=root, model="cfn", weights=ckpt, out=str(out),
                                phase="head", epochs=1, batch_size=16, head_solver=solver, input_norm=norm,
                                progress=False))
        conf = json.loads((out / "config.json").read_text())
        assert conf["input_norm"] == norm and conf["backbone"]["recipe"] == "jps"
        assert conf["input"] == ("the backbone's own" if norm == "backbone" else "standardised by the training split")


def test_featuremaps_feed_the_image_as_the_run_fed_its_branch(tmp_path, monkeypatch):
    from PIL import Image
    from transfer import plots
    from transfer.cli import main
    from transfer.finetune import FinetuneConfig, finetune
    from .test_datasets import mnist_like
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    finetune(FinetuneConfig(dataset="fashion-mnist", data_root=root, model="cfn", weights=_ckpt(tmp_path / "c.pt", "jps"),
                            out=str(tmp_path / "run"), phase="head", epochs=1, batch_size=16, progress=False,
                            head_solver='type: "Adam" base_lr: 0.001 lr_policy: "fixed"'))
    Image.fromarray(np.full((40, 40, 3), COLOUR, np.uint8)).save(tmp_path / "x.png")
    seen = {}

    def capture(out, model, layer, x, title):
        seen["x"] = x
        return out
    monkeypatch.setattr(plots, "plot_feature_maps", capture)
    assert main(["plot", "featuremaps", "--run", str(tmp_path / "run"), "--layer", "backbone.body.conv1",
                 "--image", str(tmp_path / "x.png")]) == 0
    assert torch.allclose(seen["x"][:, 5, 5], torch.tensor([-74.0, 83.0, -113.0]), atol=0.5)  # BGR minus jps means
