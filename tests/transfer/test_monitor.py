"""`jigsaw train --monitor`: kNN accuracies per conv layer in val.csv and curves.png, with no effect on training."""
import csv
import os

import numpy as np
import pytest
import torch

from jigsaw.cli import main as jigsaw_main
from jigsaw.config import TrainConfig
from jigsaw.train import train
from tests.jigsaw.conftest import photo_dir, photo_store, small_run  # noqa: F401 (fixtures)
from tests.transfer.test_datasets import mnist_like
from tools.run.checkpoint import load_checkpoint
from transfer.knn import knn_accuracy
from transfer.monitor import KnnMonitor


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture
def fmnist(tmp_path):
    return mnist_like(str(tmp_path / "fm"), n=(60, 30))


def test_the_monitor_logs_knn_per_layer_and_leaves_training_bit_identical(tmp_path, photo_store, fmnist):  # noqa: F811
    base = small_run(tmp_path, photo_store, 8, max_iter=4, test_interval=2, snapshot=4)
    plain = TrainConfig(out=str(tmp_path / "plain"), **base)
    watched = TrainConfig(out=str(tmp_path / "watched"), monitor="fashion-mnist", monitor_root=fmnist,
                          monitor_labels_per_class=3, monitor_queries=20, tensorboard=True, **base)
    train(plain)
    monitor = KnnMonitor("fashion-mnist", fmnist, per_class=3, queries=20)
    train(watched, monitor)
    def losses(run):
        return [(r["iter"], r["loss"], r["top1"], r["lr"]) for r in _rows(tmp_path / run / "log.csv")]
    assert losses("plain") == losses("watched")
    a = load_checkpoint(str(tmp_path / "plain" / "last.pt"))["model"]
    b = load_checkpoint(str(tmp_path / "watched" / "last.pt"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the labels reach no weight, no random stream
    val = _rows(tmp_path / "watched" / "val.csv")
    assert [r["iter"] for r in val] == ["0", "2", "4"]
    for r in val:
        accs = [float(r[f"knn_conv{i}"]) for i in range(1, 6)]
        assert all(0.0 <= x <= 1.0 for x in accs) and float(r["monitor_s"]) > 0
    assert "knn_conv1" not in _rows(tmp_path / "plain" / "val.csv")[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "watched" / "tensorboard"))
    events.Reload()
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("monitor/knn_conv2")] == \
        [(int(r["iter"]), round(float(r["knn_conv2"]), 6)) for r in val]
    assert os.path.getsize(tmp_path / "watched" / "curves.png") > 0
    with pytest.raises(ValueError, match="go together"):
        train(TrainConfig(out=str(tmp_path / "x"), monitor="fashion-mnist", **base))


def test_the_monitor_measures_what_transfer_probe_measures(tmp_path, jigsaw_ckpt, fmnist):
    """The same features as transfer's own path (the cfn backbone's preprocessing and hooks, pooled alike),
    and the accuracy the kNN gives on them."""
    from jigsaw.checkpoint import read_cfn
    from transfer.backbones import build_backbone
    from transfer.data import _load, _prepare
    from transfer.features import pooled

    cfn, _, pcfg, _ = read_cfn(jigsaw_ckpt)
    monitor = KnnMonitor("fashion-mnist", fmnist, per_class=4, queries=25, features="centred", seed=3)
    got = monitor(cfn.train(), pcfg, torch.device("cpu"))
    assert cfn.training  # the mode is given back
    backbone = build_backbone("cfn", weights=jigsaw_ckpt).eval()
    mine, theirs = {}, {}
    for name, split in monitor.splits.items():
        x = torch.stack([_prepare(_load(im, 3, 64), 64, 3) for im in split.images])
        mine[name] = monitor._features(cfn.eval(), x, pcfg, torch.device("cpu"))
        grabbed = {}
        hooks = [backbone.block(b).register_forward_hook(
            lambda m, i, o, b=b: grabbed.__setitem__(b, pooled(torch.relu(o), 2048).numpy()))
            for b in backbone.blocks]
        with torch.no_grad():
            backbone.features(torch.stack([backbone.preprocess(im) for im in x]))
        for h in hooks:
            h.remove()
        theirs[name] = grabbed
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        for name in ("bank", "queries"):  # float32, two code paths: 1e-5 of the largest value
            a, b = mine[name][layer], theirs[name][layer]
            assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max() + 1e-7, (layer, name)
        want = knn_accuracy(theirs["bank"][layer], monitor.splits["bank"].labels, theirs["queries"][layer],
                            monitor.splits["queries"].labels, 10, features="centred")
        assert got[f"knn_{layer}"] == pytest.approx(want, abs=1 / 25 + 1e-9)  # float order may flip one vote
    assert len(monitor.bank_idx) == 40 and np.bincount(monitor.splits["bank"].labels).tolist() == [4] * 10


def test_a_bad_monitor_is_one_line_before_the_run_folder_exists(tmp_path, photo_store, fmnist, capsys):  # noqa: F811
    base = small_run(tmp_path, photo_store, 8)
    args = ["train", "--data", base["data"], "--permutations", base["permutations"], "--no-progress"]
    for extra, expect in ((["--monitor", "fashion-mnsit"], "unknown dataset 'fashion-mnsit'"),
                          (["--monitor", "fashion-mnist", "--monitor-root", str(tmp_path / "none")], "none"),
                          (["--monitor", "fashion-mnist", "--monitor-root", fmnist,
                            "--monitor-labels-per-class", "7"], "has 6 images"),
                          (["--monitor", "fashion-mnist", "--monitor-root", fmnist, "--monitor-labels-per-class", "2",
                            "--test-interval", "0"],
                           "give --test-interval N")):
        out = tmp_path / "run"
        assert jigsaw_main(args + ["--out", str(out)] + extra) == 2
        err = capsys.readouterr().err
        assert expect in err and err.count("\n") == 1, err
        assert not out.exists()
