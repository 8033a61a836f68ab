"""A full disk (a file-size limit stands for it) in the middle of each long command: one line naming the
file, exit 2, the previous checkpoint intact, no worker left behind, and the same command run again
with room finishes the work."""
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")


def _full_disk(limit=256 * 1024):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _run(module, *args, full=False, cwd=None):
    """`full`: True for a 256 KiB file-size limit, or the limit in bytes."""
    limit = None if not full else 256 * 1024 if full is True else full
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=ENV, cwd=cwd, capture_output=True,
                          text=True, timeout=600, preexec_fn=(lambda: _full_disk(limit)) if limit else None)


def _one_error_line(r, needle):
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert r.returncode == 2 and len(errors) == 1 and needle in errors[0], r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr[-3000:]


def _photos(folder, n=12):
    folder.mkdir()
    for i in range(n):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")


def test_prepare_with_workers_on_a_full_disk_then_again(tmp_path):
    _photos(tmp_path / "src")
    r = _run("jigsaw.cli", "prepare", tmp_path / "src", "-o", tmp_path / "s.h5", "--workers", "2", full=True)
    _one_error_line(r, "cannot write the store")  # it was a segfault (rc 139)
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "src")], capture_output=True, text=True).stdout.split()
    assert left == [], left  # no worker outlives its parent
    r = _run("jigsaw.cli", "prepare", tmp_path / "src", "-o", tmp_path / "s.h5", "--workers", "2")
    assert r.returncode == 0 and "12 images" in r.stdout, r.stderr[-3000:]


@pytest.mark.parametrize("limit", [1_536_000])  # early writes: the 256 KiB test above
def test_prepare_fails_in_one_line_wherever_the_disk_fills(tmp_path, limit):
    """At the store's first chunks, or at a flush late in the run (h5py's RuntimeError there segfaulted
    the process, exit 139): one line, exit 2, and the same command finishes the store afterwards."""
    _photos(tmp_path / "src")
    r = _run("jigsaw.cli", "prepare", tmp_path / "src", "-o", tmp_path / "s.h5", "--workers", "1", full=limit)
    _one_error_line(r, "cannot write the store (File too large)")
    assert not (tmp_path / "s.h5").exists()  # nothing under the final name
    r = _run("jigsaw.cli", "prepare", tmp_path / "src", "-o", tmp_path / "s.h5", "--workers", "1")
    assert r.returncode == 0 and "12 images" in r.stdout, r.stderr[-3000:]


def test_train_on_a_full_disk_keeps_the_last_checkpoint_and_resumes(tmp_path):
    _photos(tmp_path / "src")
    store = tmp_path / "s.h5"
    assert _run("jigsaw.cli", "prepare", tmp_path / "src", "-o", store).returncode == 0
    assert _run("jigsaw.cli", "permutations", "-n", "8", "-o", tmp_path / "p.npy").returncode == 0
    out = tmp_path / "run"
    r = _run("jigsaw.cli", "train", "--data", store, "--permutations", tmp_path / "p.npy", "--out", out,
             "--batch-size", "4", "--width", "0.125", "--max-iter", "2", "--snapshot", "2", "--test-interval", "0",
             "--val-fraction", "0.25", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    before = (out / "last.pt").read_bytes()
    r = _run("jigsaw.cli", "train", "--out", out, "--resume", "--max-iter", "4", "--no-progress", full=True)
    _one_error_line(r, "last.pt: cannot write")
    assert (out / "last.pt").read_bytes() == before
    r = _run("jigsaw.cli", "train", "--out", out, "--resume", "--max-iter", "4", "--no-progress")
    assert r.returncode == 0 and torch.load(out / "last.pt", weights_only=True)["iter"] == 4, r.stderr[-3000:]


def test_transfer_on_a_full_disk_then_resumed(tmp_path):
    from tests.transfer.test_datasets import mnist_like
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    out = tmp_path / "ft"
    args = ("finetune", "--dataset", "fashion-mnist", "--data-root", root, "--model", "mlp", "--phase", "finetune",
            "--epochs", "2", "--batch-size", "8", "--out", out, "--no-progress")
    r = _run("transfer.cli", *args, full=True)
    _one_error_line(r, "checkpoint.pt: cannot write")  # 1.6 MB of weights do not fit in 256 KB
    r = _run("transfer.cli", "finetune", "--out", out, "--resume", "--no-progress")
    assert r.returncode == 0 and (out / "summary.json").exists(), r.stderr[-3000:]
    curves = (out / "curves.png").read_bytes()
    r = _run("transfer.cli", "plot", "curves", "--run", out, full=3_000)  # issue 26 §8: the plots
    _one_error_line(r, "curves.png: cannot write")
    assert (out / "curves.png").read_bytes() == curves


@pytest.fixture
def cfn_checkpoint(tmp_path):
    from jigsaw.cfn import CFN
    from jigsaw.checkpoint import cfn_payload
    from jigsaw.permutations import make_permutations
    from jigsaw.recipes import recipe_record
    from tools.run.checkpoint import save_checkpoint
    path = tmp_path / "cfn.pt"
    save_checkpoint(str(path), cfn_payload(CFN(8, width=0.25, seed=0), make_permutations(8, 0),
                                           recipe_record("jps")[1]))
    return path


def test_convert_and_export_on_a_full_disk_are_one_line(tmp_path, cfn_checkpoint):
    """Issue 26 §8: the previous outputs stay as they were, and nothing partial is left under a final name."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "c.caffemodel").write_bytes(b"previous")
    r = _run("jigsaw.cli", "convert", cfn_checkpoint, "-o", out / "c", full=20_000)
    _one_error_line(r, "cannot write")
    assert (out / "c.caffemodel").read_bytes() == b"previous" and not (out / "c.prototxt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["c.caffemodel"]  # no temporary left behind
    assert _run("jigsaw.cli", "convert", cfn_checkpoint, "-o", out / "c").returncode == 0
    r = _run("tools.caffe.cli", out / "c.prototxt", out / "c.caffemodel", "--export", out / "m.onnx", full=20_000)
    _one_error_line(r, "m.onnx")
    assert not (out / "m.onnx").exists()


def test_convert_into_a_read_only_folder_is_one_line(tmp_path, cfn_checkpoint):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user the folder's permissions do not stop (root)")
        r = _run("jigsaw.cli", "convert", cfn_checkpoint, "-o", locked / "c")
        _one_error_line(r, "cannot write")
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("limit", [3_000])
def test_probe_on_a_full_disk_is_one_line_and_runs_again(tmp_path, cfn_checkpoint, limit):
    """Issue 26 §8: the feature caches (memmaps), the tables and the plots of `transfer probe`."""
    from tests.transfer.test_datasets import mnist_like
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    args = ("probe", "--dataset", "fashion-mnist", "--data-root", root, "--model", "cfn", "--weights", cfn_checkpoint,
            "--out", tmp_path / "p", "--random-seeds", "2", "--protocols", "knn", "--batch-size", "16", "--no-progress")
    r = _run("transfer.cli", *args, full=limit)
    _one_error_line(r, "cannot write")
    r = _run("transfer.cli", *args)
    assert r.returncode == 0 and (tmp_path / "p" / "knn.csv").exists(), r.stderr[-3000:]
