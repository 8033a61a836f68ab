"""SIGKILL at random moments (possibly mid-checkpoint), resume each time: never a corrupt checkpoint, and
the final weights equal an uninterrupted run's (CPU, fixed seed)."""
import os
import random
import signal
import subprocess
import sys

import torch

from jigsaw.permutations import make_permutations, save_permutations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cmd(store, perms, out, resume):
    return [sys.executable, "-m", "jigsaw.cli", "train", "--data", store, "--permutations", perms,
            "--out", str(out), "--batch-size", "8", "--width", "0.125", "--val-fraction", "0.25",
            "--max-iter", "16", "--snapshot", "2", "--test-interval", "0", "--no-progress", "--device", "cpu",
            "--recipe", "paper",  # a hand-made 256 px store: the square layout
            *(["--resume"] if resume else [])]


def test_random_sigkills_then_resume_equal_the_uninterrupted_run(tmp_path):
    import h5py
    import numpy as np
    rng = np.random.default_rng(0)
    store = str(tmp_path / "s.h5")
    with h5py.File(store, "w") as f:  # small random-texture store in prepare's square layout
        f.create_dataset("images", data=rng.integers(0, 256, (12, 256, 256, 3), dtype=np.uint8),
                         chunks=(1, 256, 256, 3))
    perms = str(tmp_path / "p.npy")
    save_permutations(perms, make_permutations(8))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    full = tmp_path / "full"
    subprocess.run(_cmd(store, perms, full, False), env=env, check=True, capture_output=True)
    cut = tmp_path / "cut"
    chooser = random.Random(1)
    kills = 0
    for attempt in range(8):
        resume = (cut / "last.pt").exists()
        proc = subprocess.Popen(_cmd(store, perms, cut, resume), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=chooser.uniform(3.0, 7.0))  # imports take ~3 s; then a few iterations
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            if (cut / "last.pt").exists():
                torch.load(cut / "last.pt", weights_only=True)  # never corrupt
            continue
        assert proc.returncode == 0
        break
    else:
        r = subprocess.run(_cmd(store, perms, cut, True), env=env, capture_output=True)
        assert r.returncode == 0
    assert kills >= 1
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(cut / "last.pt", weights_only=True)
    assert a["iter"] == b["iter"] == 16
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [f for f in os.listdir(cut) if f.startswith(".tmp")] == []
