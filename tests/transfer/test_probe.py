"""Linear probes on a tiny fixture: features cached once, baseline rows present, weight decay chosen on
the validation split (never on test), twins of the same shape with the chosen init."""
import csv
import os

import pytest
import torch

from jigsaw.caffe_form import FILLERS
from jigsaw.cfn import CFN
from tools.run.checkpoint import save_checkpoint
from tools.run.errors import UserError
from transfer import features as features_mod
from transfer import probe as probe_mod
from transfer.backbones import build_backbone
from transfer.probe import ProbeConfig, probe
from transfer.twins import make_twin

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
        return probe(cfg)["linear"]


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
    monkeypatch.setattr(features_mod, "pooled", no_more_extraction)
    monkeypatch.setattr(probe_mod, "fit_logistic", no_more_extraction)  # and the fits are kept with them
    assert _probe(setup) == first


def test_twins_have_the_backbones_shape_and_the_chosen_init(setup):
    backbone = build_backbone("cfn", setup.weights, upto="fc6")
    caffe, msra = make_twin(backbone, 1, "caffe", "cfn"), make_twin(backbone, 1, "msra", "cfn")
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


def _features(out):
    with open(f"{out}/config.json") as f:
        return {tag: f"{out}/{folder}" for tag, folder in __import__("json").load(f)["features"].items()}


def test_another_setting_never_reuses_stale_features(setup):
    from dataclasses import replace
    _probe(setup)
    caffe = _features(setup.out)
    _probe(replace(setup, twin_init="msra"))
    msra = _features(setup.out)
    assert msra["pretrained"] == caffe["pretrained"]  # the pretrained net's features do not depend on the twins
    assert msra["random0"] != caffe["random0"] and len(set(caffe.values()) | set(msra.values())) == 5
    a, b = (torch.from_numpy(__import__("numpy").load(f"{c['random0']}/conv2_test.npy").astype("float32"))
            for c in (caffe, msra))
    assert not torch.equal(a, b)
    _probe(replace(setup, target_dim=500))
    assert not set(_features(setup.out).values()) & set(msra.values())  # every net's features depend on it


def test_adding_a_pretrained_run_computes_only_its_features_and_fits(setup, tmp_path, monkeypatch):
    from dataclasses import replace
    first = _probe(setup)
    second = str(tmp_path / "c2.pt")
    cfn = CFN(8, width=0.125, seed=1)
    save_checkpoint(second, dict(model=cfn.state_dict(), widths=cfn.widths, iter=0, recipe="jps",
                                 recipe_options={}, permutations=torch.zeros(0, 9, dtype=torch.long)))
    calls = {"extract": 0, "fit": 0}
    pooled, fit = features_mod.pooled, probe_mod.fit_logistic

    def counted(name, f):
        def g(*a, **k):
            calls[name] += 1
            return f(*a, **k)
        return g
    monkeypatch.setattr(features_mod, "pooled", counted("extract", pooled))
    monkeypatch.setattr(probe_mod, "fit_logistic", counted("fit", fit))
    rows = _probe(replace(setup, weights=[setup.weights, second]))
    batches = -(-60 * 85 // 100 // setup.batch_size) + -(-60 * 15 // 100 // setup.batch_size) + -(-20 // 16)
    assert calls["fit"] == len(LAYERS) * 2  # the new run's: 6 layers x 2 weight decays; the rest were kept
    assert 0 < calls["extract"] <= len(LAYERS) * (batches + 2)  # one net's pass over the three splits
    fits = _csv(f"{setup.out}/fits.csv")
    for r, old in zip(rows, first):  # the kept runs' scores are the ones measured the first time
        assert r["random_mean"] == old["random_mean"] and r["random_se"] == old["random_se"]
        kept = max((f for f in fits if f["model"] == "pretrained0" and f["layer"] == r["layer"]),
                   key=lambda f: float(f["val"]))
        assert float(kept["test"]) == pytest.approx(old["pretrained"], abs=1e-4)
    calls.update(extract=0, fit=0)
    assert _probe(replace(setup, weights=[setup.weights, second], lbfgs_iters=6)) and calls["extract"] == 0
    assert calls["fit"] == 4 * len(LAYERS) * 2  # new fit settings: all four nets are fit again on kept features


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


def test_a_damaged_fits_file_is_fit_again_not_a_traceback(setup):
    first = _probe(setup)
    folder = _features(setup.out)["pretrained"]
    (fits,) = [p for p in os.listdir(folder) if p.startswith("fits_")]
    with open(os.path.join(folder, fits), "w") as f:
        f.write('{"key": [1, 2')
    assert _probe(setup) == first


def test_a_damaged_feature_file_is_extracted_again_not_a_traceback(setup):
    first = _probe(setup)
    folder = _features(setup.out)["pretrained"]
    path = os.path.join(folder, "conv3_train.npy")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # an interrupted copy: the header survives, the rows do not
        f.truncate(size // 2)
    assert _probe(setup) == first
    assert os.path.getsize(path) == size


def test_knn_and_lowshot_tables_pair_nets_and_never_read_the_validation_labels(setup):
    from dataclasses import replace
    import numpy as np
    cfg = replace(setup, labels_per_class=("1", "2", "all"), draws=2, lowshot_weight_decays=(0.1, 10.0))
    with pytest.warns(UserWarning, match="edge of the grid"):
        tables = probe(cfg)
    knn = _csv(f"{setup.out}/knn.csv")
    assert [r["layer"] for r in knn] == LAYERS and all(0 <= float(r["pretrained"]) <= 1 for r in knn)
    rows = _csv(f"{setup.out}/label_efficiency.csv")
    assert {(r["protocol"], r["budget"]) for r in rows} == {(p, b) for p in ("linear", "knn") for b in ("1", "2", "all")} \
        | {("prototype", "1"), ("prototype", "2")}  # nearest class mean: low-shot budgets only
    for r in rows:
        assert r["draws"] == ("1" if r["budget"] == "all" else "2") and r["n"] == "2"
        if r["budget"] == "all":  # the full-label tables' numbers
            full = next(x for x in tables[r["protocol"]] if x["layer"] == r["layer"])
            assert float(r["pretrained"]) == full["pretrained"] and float(r["random_mean"]) == full["random_mean"]
        else:
            assert int(r["labels"]) == int(r["budget"]) * 10
    assert open(f"{setup.out}/label_efficiency.png", "rb").read(4) == b"\x89PNG"
    low = [r for r in rows if r["budget"] != "all"]
    # the validation split's labels, scrambled: the full-label linear probe may change, low-shot may not
    for folder in _features(setup.out).values():
        path = os.path.join(folder, "labels_val.npy")
        np.save(path, (np.load(path) + 1) % 10)
        for name in os.listdir(folder):
            if name.startswith(("lowshot_", "fits_")):
                os.remove(os.path.join(folder, name))
    with pytest.warns(UserWarning, match="edge of the grid"):
        probe(cfg)
    assert [r for r in _csv(f"{setup.out}/label_efficiency.csv") if r["budget"] != "all"] == low


def test_twin_seeds_choose_fresh_twins_and_are_recorded(setup):
    from dataclasses import replace
    import json
    _probe(setup)
    default = _features(setup.out)
    _probe(replace(setup, twin_seeds=(7, 8)))
    fresh = _features(setup.out)
    assert fresh["pretrained"] == default["pretrained"] and not {fresh["random0"], fresh["random1"]} & set(default.values())
    with open(f"{setup.out}/config.json") as f:
        assert json.load(f)["twin_seeds"] == [7, 8]
    with pytest.raises(UserError, match="two different seeds"):
        probe(replace(setup, twin_seeds=(7, 7)))


@pytest.mark.parametrize("field,value,needle", [("labels_per_class", ("0.5",), "whole numbers"),
                                                ("label_fraction", ("3",), "fractions"),
                                                ("labels_per_class", ("lots",), "label budget"),
                                                ("protocols", ("svm",), "protocols"),
                                                ("labels_per_class", ("1", "40"), "smallest class")])
def test_bad_protocol_settings_are_one_line_before_any_work(setup, field, value, needle):
    from dataclasses import replace
    with pytest.raises(UserError, match=needle):
        probe(replace(setup, **{field: value}))
    assert not os.path.exists(setup.out)  # refused before any folder or feature


def test_voc2007_is_probed_with_svms_on_trainval_and_map_on_test(setup, tmp_path):
    from dataclasses import replace

    from .test_voc07 import voc_like
    root, _ = voc_like(str(tmp_path / "VOCdevkit"), n=(30, 12))
    cfg = replace(setup, dataset="voc2007", data_root=root, svm_costs=(1.0,), input_size=64)
    tables = probe(cfg)
    rows = _csv(f"{setup.out}/voc07.csv")
    assert list(tables) == ["svm"] and [r["layer"] for r in rows] == LAYERS
    assert all(0 <= float(r["pretrained"]) <= 1 and r["n"] == "2" for r in rows)
    folder = _features(setup.out)["pretrained"]
    (kept,) = [p for p in os.listdir(folder) if p.startswith("svm_")]
    with open(os.path.join(folder, kept)) as f:
        conv1 = __import__("json").load(f)["value"]["conv1"]
    assert len(conv1["aps"]) == 20 and conv1["cost"] == 1.0  # the choice among costs: tests/transfer/test_svm.py
    with pytest.raises(UserError, match="multi-label"):
        probe(replace(cfg, labels_per_class=("1",)))


def test_knn_alone_extracts_no_validation_features_and_limit_test_samples_the_test_split(setup):
    import dataclasses
    import glob

    import numpy as np
    cfg = dataclasses.replace(setup, protocols=("knn",), limit_test=7)
    rows = probe(cfg)["knn"]
    assert [r["layer"] for r in rows] == LAYERS
    folders = glob.glob(f"{cfg.out}/cache/*/")
    assert len(folders) == 3
    for folder in folders:
        assert not glob.glob(f"{folder}*_val.npy")  # only the linear probe reads the validation split
        assert np.load(f"{folder}conv1_test.npy").shape[0] == 7 and len(np.load(f"{folder}labels_test.npy")) == 7
    from transfer.datasets import load_dataset
    a = load_dataset("fashion-mnist", cfg.data_root, limit_test=7)["test"]
    b = load_dataset("fashion-mnist", cfg.data_root, limit_test=7)["test"]
    whole = load_dataset("fashion-mnist", cfg.data_root)["test"]
    assert np.array_equal(a.images, b.images) and len(whole) == 20
    assert not np.array_equal(a.images, whole.images[:7])  # a seeded sample, not the first seven


def test_a_probe_without_bars_says_each_step(setup, capsys):
    """`--no-progress` printed nothing for 9 minutes: now a line per net's features and per layer's fit."""
    import dataclasses
    _probe(dataclasses.replace(setup, protocols=("linear", "knn")))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("probe: ")]
    for k, tag in enumerate(("pretrained", "random0", "random1"), 1):
        assert f"probe: [{k}/3] {tag}: features of 6 layers (" in "\n".join(lines)
        assert any(line.startswith(f"probe: [{k}/3] {tag}: features ready (") for line in lines)
        for layer in LAYERS:
            assert any(line.startswith(f"probe: {tag} {layer}: linear probe, 2 weight decays, chose ") for line in lines)
            assert any(line.startswith(f"probe: {tag} {layer}: kNN 0.") for line in lines)
    assert len(lines) == 3 * (2 + 2 * len(LAYERS))
