"""Linear probes on a tiny fixture: features cached once, baseline rows present, weight decay chosen on
the validation split (never on test), twins of the same shape with the chosen init."""
import csv

import pytest
import torch

from jigsaw.caffe_form import FILLERS
from jigsaw.cfn import CFN
from tools.checkpoint import save_checkpoint
from transfer import probe as probe_mod
from transfer.backbones import build_backbone
from transfer.probe import ProbeConfig, _twin, probe

from .test_datasets import mnist_like

LAYERS = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6"]


@pytest.fixture
def setup(tmp_path):
    cfn = CFN(8, width=0.125, seed=0)
    ckpt = str(tmp_path / "c.pt")
    save_checkpoint(ckpt, dict(model=cfn.state_dict(), widths=cfn.widths, iter=0, recipe="jps",
                               recipe_options={}, permutations=torch.zeros(0, 9, dtype=torch.long)))
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    return ProbeConfig(dataset="fashion-mnist", data_root=root, model="cfn", weights=ckpt, out=str(tmp_path / "p"),
                       random_seeds=2, weight_decays=(1e-4, 10.0), lbfgs_iters=5, batch_size=16, progress=False)


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _probe(cfg):
    with pytest.warns(UserWarning, match="edge of the grid"):  # two candidates: always an edge
        return probe(cfg)


def test_probe_rows_pair_each_layer_with_its_random_baseline(setup):
    rows = _probe(setup)
    assert [r["layer"] for r in rows] == LAYERS
    for r in rows:
        assert r["n"] == 2 and 0 <= r["pretrained"] <= 1 and 0 <= r["random_mean"] <= 1 and r["random_se"] >= 0
    assert [r["layer"] for r in _csv(f"{setup.out}/probe.csv")] == LAYERS
    fits = _csv(f"{setup.out}/fits.csv")
    assert len(fits) == 3 * len(LAYERS) * 2  # pretrained + 2 twins, 6 layers, 2 weight decays
    for r in rows:  # the chosen weight decay is the one with the best validation accuracy
        mine = [f for f in fits if f["model"] == "pretrained" and f["layer"] == r["layer"]]
        best = max(mine, key=lambda f: float(f["val"]))
        assert float(best["weight_decay"]) == r["pretrained_weight_decay"]
        assert float(best["test"]) == pytest.approx(r["pretrained"], abs=1e-4)
    assert open(f"{setup.out}/probe.png", "rb").read(4) == b"\x89PNG"


def test_features_are_cached_once(setup, monkeypatch):
    first = _probe(setup)

    def no_more_extraction(*a, **k):
        raise AssertionError("features extracted twice")
    monkeypatch.setattr(probe_mod, "_pooled", no_more_extraction)
    assert _probe(setup) == first


def test_twins_have_the_backbones_shape_and_the_chosen_init(setup):
    backbone = build_backbone("cfn", setup.weights, upto="fc6")
    caffe, msra = _twin(backbone, 1, "caffe", "cfn"), _twin(backbone, 1, "msra", "cfn")
    for name in LAYERS:
        a, c, m = backbone.block(name).weight, caffe.block(name).weight, msra.block(name).weight
        assert a.shape == c.shape == m.shape and not torch.equal(a, c)
        assert c.std().item() == pytest.approx(FILLERS[name][0], rel=0.2)
        assert caffe.block(name).bias.eq(FILLERS[name][1]).all() and msra.block(name).bias.eq(0).all()
    assert backbone.block("conv1").weight is not caffe.block("conv1").weight


@pytest.mark.parametrize("flag,value", [("--batch-size", "0"), ("--random-seeds", "-1"), ("--weight-decays", "-0.1"),
                                        ("--target-dim", "0")])
def test_bad_probe_flags_exit_2_with_the_reason(flag, value, capsys):
    from transfer.cli import main
    with pytest.raises(SystemExit) as e:
        main(["probe", "--dataset", "fashion-mnist", "--model", "cfn", "--weights", "none", "--out", "x", flag, value])
    assert e.value.code == 2 and f"argument {flag}: must be" in capsys.readouterr().err


def test_another_setting_never_reuses_stale_features(setup):
    from dataclasses import replace
    _probe(setup)
    _probe(replace(setup, twin_init="msra"))
    caches = sorted((p for p in __import__("pathlib").Path(setup.out, "cache").iterdir()), key=str)
    assert len(caches) == 2  # one feature cache per setting
    a, b = (torch.from_numpy(__import__("numpy").load(c / "random0_conv2_test.npy").astype("float32")) for c in caches)
    assert not torch.equal(a, b)


def test_several_pretrained_runs_give_mean_and_se_and_a_larger_input_probes_fc6_as_a_map(setup, tmp_path):
    from dataclasses import replace
    second = str(tmp_path / "c2.pt")
    cfn = CFN(8, width=0.125, seed=1)
    save_checkpoint(second, dict(model=cfn.state_dict(), widths=cfn.widths, iter=0, recipe="jps",
                                 recipe_options={}, permutations=torch.zeros(0, 9, dtype=torch.long)))
    rows = _probe(replace(setup, weights=[setup.weights, second], input_size=96))
    fits = _csv(f"{setup.out}/fits.csv")
    for r in rows:
        bests = [max((f for f in fits if f["model"] == tag and f["layer"] == r["layer"]), key=lambda f: float(f["val"]))
                 for tag in ("pretrained0", "pretrained1")]
        tests = [float(b["test"]) for b in bests]
        assert r["pretrained_n"] == 2 and r["pretrained"] == pytest.approx(sum(tests) / 2, abs=1e-4)
        assert r["pretrained_se"] == pytest.approx(abs(tests[0] - tests[1]) / 2, abs=1e-4)
    fc6 = next(r for r in rows if r["layer"] == "fc6")
    assert fc6["dims"] == 3 * 3 * cfn.widths["fc6"]  # 96 px: fc6 slid over pool5 (5x5) gives a 3x3 map
