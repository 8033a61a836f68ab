"""`jigsaw train --trunk` (jigsaw on a torchvision trunk) and `--method pirl`: outputs, exact resume, what
transfer reads back, and the settings they refuse."""
import csv
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from jigsaw.cli import main
from jigsaw.permutations import make_permutations, save_permutations

pytestmark = pytest.mark.needs_torchvision
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAST = ["--batch-size", "8", "--width", "0.125", "--val-fraction", "0.25", "--test-iter", "1", "--no-progress",
        "--device", "cpu", "--solver", "cfn_solver_short", "--test-interval", "0"]
METHODS = {"jigsaw": ["--trunk", "resnet18"], "pirl": ["--trunk", "resnet18", "--method", "pirl",
                                                       "--pirl-negatives", "5"]}


@pytest.fixture(scope="module")
def perms(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("perms") / "p.npy")
    save_permutations(path, make_permutations(8))
    return path


def _losses(out):
    with open(os.path.join(out, "log.csv")) as f:
        return [(r["iter"], r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("method,loss", [("jigsaw", None), ("pirl", "nce"), ("pirl", "infonce")])
def test_a_resumed_trunk_run_is_the_uninterrupted_one(tmp_path, photo_store, perms, method, loss):
    chosen = ["--pirl-loss", loss] if loss else []
    args = ["--data", photo_store, "--permutations", perms, *FAST, *METHODS[method], *chosen, "--snapshot", "2"]
    assert main(["train", *args, "--out", str(tmp_path / "full"), "--max-iter", "4"]) in (0, None)
    assert main(["train", *args, "--out", str(tmp_path / "cut"), "--max-iter", "2"]) in (0, None)
    assert main(["train", *args, "--out", str(tmp_path / "cut"), "--max-iter", "4", "--resume"]) in (0, None)
    assert _losses(tmp_path / "cut") == _losses(tmp_path / "full")
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=True) for n in ("full", "cut"))
    assert a["trunk"] == "resnet18" and a["method"] == method and a["iter"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    if method == "pirl":  # the bank and its Z come back as they were
        assert torch.equal(a["method_state"]["bank"]["memory"], b["method_state"]["bank"]["memory"])
        assert a["method_state"]["bank"]["z"] == b["method_state"]["bank"]["z"]
        assert (a["method_state"]["bank"]["z"] > 0) == (loss == "nce")  # InfoNCE has no Z
        other = "infonce" if loss == "nce" else "nce"
        assert main(["train", *args, "--out", str(tmp_path / "cut"), "--max-iter", "6", "--resume", "--pirl-loss",
                     other]) == 2
    # another trunk or method cannot resume this run
    code = main(["train", *args, "--out", str(tmp_path / "cut"), "--max-iter", "6", "--resume", "--trunk",
                 "resnet50"])
    assert code == 2


def test_transfer_reads_the_pretrained_trunk_with_the_input_it_saw(tmp_path, photo_store, perms):
    from transfer.backbones import build_backbone
    from tools.run.errors import UserError
    out = tmp_path / "pirl"
    assert main(["train", "--data", photo_store, *FAST, *METHODS["pirl"], "--out", str(out), "--max-iter", "1",
                 "--pirl-image-size", "48"]) in (0, None)
    ck = torch.load(out / "last.pt", weights_only=True)
    backbone = build_backbone("resnet18", str(out / "last.pt"))
    assert backbone.blocks == ["stem", "layer1", "layer2", "layer3", "layer4"] and backbone.input_size == 48
    body = backbone.body.state_dict()
    assert torch.equal(body["stem.0.weight"], ck["model"]["trunk.net.conv1.weight"])
    assert torch.equal(body["layer4.1.conv2.weight"], ck["model"]["trunk.net.layer4.1.conv2.weight"])
    x = torch.rand(2, 3, 48, 48)
    assert torch.allclose(backbone.preprocess(x)[:, 0], (x[:, 0] - 0.485) / 0.229)
    with pytest.raises(UserError, match="give --model resnet18"):
        build_backbone("resnet50", str(out / "last.pt"))


def test_pirl_needs_a_torchvision_trunk_and_no_permutations(tmp_path, photo_store, capsys):
    code = main(["train", "--data", photo_store, "--method", "pirl", "--out", str(tmp_path / "x"), *FAST])
    assert code == 2 and "give a torchvision --trunk" in capsys.readouterr().err
    code = main(["train", "--data", photo_store, "--trunk", "resnet18", "--out", str(tmp_path / "y"), *FAST])
    assert code == 2 and "--permutations is required" in capsys.readouterr().err
    code = main(["train", "--data", photo_store, "--trunk", "vgg16", "--method", "pirl", "--width", "0.5",
                 "--out", str(tmp_path / "z"), *FAST[:2], *FAST[4:]])
    assert code == 2 and "vgg16 has no width multiplier" in capsys.readouterr().err


def test_the_monitor_measures_the_trunks_stages(tmp_path, photo_store):
    from tests.transfer.test_datasets import mnist_like
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    out = tmp_path / "m"
    assert main(["train", "--data", photo_store, *FAST, *METHODS["pirl"], "--out", str(out), "--max-iter", "2",
                 "--test-interval", "2", "--monitor", "fashion-mnist", "--monitor-root", root,
                 "--monitor-labels-per-class", "2", "--monitor-queries", "10"]) in (0, None)
    with open(out / "val.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["iter"] for r in rows] == ["0", "2"]
    assert all(0 <= float(r[f"knn_{s}"]) <= 1 for r in rows for s in ("stem", "layer1", "layer2", "layer3", "layer4"))


def test_convert_writes_the_trunk_as_torchvision_weights_or_caffes_form(tmp_path, photo_store, perms, capsys):
    import torchvision
    from tools.caffe.net import load_caffe_net
    from jigsaw.checkpoint import read_trunk
    out = tmp_path / "r"
    assert main(["train", "--data", photo_store, "--permutations", perms, *FAST, *METHODS["jigsaw"], "--width", "1",
                 "--out", str(out), "--max-iter", "1"]) in (0, None)
    assert main(["convert", str(out / "last.pt"), "-o", str(tmp_path / "r18.pth")]) == 0
    missing, unexpected = torchvision.models.resnet18().load_state_dict(
        torch.load(tmp_path / "r18.pth", weights_only=True), strict=False)
    assert missing == ["fc.weight", "fc.bias"] and not unexpected
    assert main(["convert", str(out / "last.pt"), "-o", str(tmp_path / "r18")]) == 0  # Caffe's form, checked
    assert "the resnet18 trunk for 64 px input" in capsys.readouterr().out
    trunk, _ = read_trunk(str(out / "last.pt"))
    net = load_caffe_net(str(tmp_path / "r18.prototxt"), str(tmp_path / "r18.caffemodel"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(net(data=x, outputs=["pool"])["pool"].flatten(1), trunk(x), rtol=1e-4, atol=1e-5)
    assert main(["evaluate", "--weights", str(out / "last.pt"), "--data", photo_store]) == 2
    err = capsys.readouterr().err
    assert "not a CFN's" in err and "Traceback" not in err


def test_a_trunk_checkpoint_with_a_foreign_record_is_one_line(tmp_path, photo_store, perms):
    from tools.run.errors import UserError
    from transfer.backbones import build_backbone
    out = tmp_path / "r"
    assert main(["train", "--data", photo_store, "--permutations", perms, *FAST, *METHODS["jigsaw"], "--out", str(out),
                 "--max-iter", "1"]) in (0, None)
    ck = torch.load(out / "last.pt", weights_only=True)
    for change in (dict(width=1e9), dict(width="wide"), dict(method="rotnet"), dict(input_size=-3),
                   dict(recipe=["jps"]), dict(recipe_options={"tile": "x"}), dict(model=[1, 2])):
        torch.save(dict(ck, **change), tmp_path / "bad.pt")
        with pytest.raises(UserError):
            build_backbone("resnet18", str(tmp_path / "bad.pt"))


def _cli(*args):
    return [sys.executable, "-m", "jigsaw.cli", "train", *args]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


def test_kill_9_of_a_pirl_run_then_resume_is_the_uninterrupted_run(tmp_path, photo_store):
    """The bank, Z and the negatives' stream survive a SIGKILL at any moment: only what last.pt holds is kept."""
    args = ["--data", photo_store, *FAST, *METHODS["pirl"], "--max-iter", "12", "--snapshot", "2"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_cli(*args, "--out", str(full)), env=_env(), check=True, capture_output=True)
    proc = subprocess.Popen(_cli(*args, "--out", str(cut)), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while proc.poll() is None and not ((cut / "log.csv").exists() and len(_losses(cut)) >= 4):
        time.sleep(0.05)  # the event waited for: four logged iterations (two snapshots)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (cut / "last.pt").exists() and len(_losses(cut)) < 12
    subprocess.run(_cli(*args, "--out", str(cut), "--resume"), env=_env(), check=True, capture_output=True)
    assert _losses(cut) == _losses(full)
    a, b = (torch.load(d / "last.pt", weights_only=True) for d in (full, cut))
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["method_state"]["bank"]["memory"], b["method_state"]["bank"]["memory"])


def _half_batch_losses(photo_store, perms):
    """Iteration 0's loss of each rank's half batch, every BatchNorm normalising over that half alone."""
    from types import SimpleNamespace
    from jigsaw.batches import batch_indices, split_indices
    from jigsaw.config import TrainConfig
    from jigsaw.methods import JigsawMethod, build_model
    from jigsaw.permutations import load_permutations
    from jigsaw.recipes import recipe_record
    from jigsaw.store import open_images
    cfg = TrainConfig(data=photo_store, permutations=perms, out="unused", trunk="resnet18", width=0.125,
                      batch_size=8, val_fraction=0.25)
    pcfg, _ = recipe_record(cfg.recipe)
    perms_np = load_permutations(perms)
    model = build_model(cfg, len(perms_np), pcfg.tile, cfg.seed).train()
    source = open_images(photo_store)
    train_pool, _ = split_indices(len(source), cfg.val_fraction, cfg.seed)
    images = torch.from_numpy(source.read(batch_indices(train_pool, 8, 0, cfg.seed)))
    losses = {}
    for rank, part in ((None, slice(None)), (0, slice(0, 4)), (1, slice(4, 8))):
        run = SimpleNamespace(cfg=cfg, perms_np=perms_np, perms=torch.from_numpy(perms_np), pcfg=pcfg,
                              device=torch.device("cpu"), rank=rank or 0, fast=False)
        with torch.no_grad():
            losses[rank] = float(JigsawMethod(run, model).loss(model, images[part], 0, part)[0])
    return losses


def test_two_process_ddp_batchnorm_is_per_rank_and_the_pirl_bank_takes_every_ranks_rows(tmp_path, photo_store,
                                                                                         perms):
    """BatchNorm is not synchronised (plain DDP, as VISSL's configs): each rank normalises its half of the batch,
    so the logged loss is the mean of the halves' losses, not the whole batch's. The bank gathers all ranks."""
    from jigsaw.batches import batch_indices, split_indices
    from jigsaw.pirl import MemoryBank
    from jigsaw.store import open_images
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "jigsaw.cli", "train", "--data", photo_store, *FAST]
    r = subprocess.run(ddp + [*METHODS["jigsaw"], "--permutations", perms, "--out", str(tmp_path / "j"),
                              "--max-iter", "1"], env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    logged = float(_losses(tmp_path / "j")[0][1])
    halves = _half_batch_losses(photo_store, perms)
    assert abs(logged - (halves[0] + halves[1]) / 2) < 1e-4, (logged, halves)
    assert abs(logged - halves[None]) > 1e-3  # a synchronised BatchNorm would give the whole batch's loss
    r = subprocess.run(ddp + [*METHODS["pirl"], "--out", str(tmp_path / "p"), "--max-iter", "2"], env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    bank = torch.load(tmp_path / "p" / "last.pt", weights_only=True)["method_state"]["bank"]["memory"]
    pool, _ = split_indices(len(open_images(photo_store)), 0.25, 0)
    start = MemoryBank(len(pool), bank.shape[1], seed=0).memory
    moved = set((bank != start).any(1).nonzero().flatten().tolist())
    rows = {int(np.searchsorted(pool, i)) for k in range(2) for i in batch_indices(pool, 8, k, 0)}
    assert moved == rows  # both ranks' rows, from both iterations, and nothing else
