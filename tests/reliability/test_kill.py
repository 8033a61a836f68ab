"""SIGKILL at random iterations (possibly mid-checkpoint), resume each time: never a corrupt checkpoint,
and the final weights equal an uninterrupted run's (CPU, fixed seed). Each kill waits for the event (the
chosen iteration's row in log.csv), never for a number of seconds, so a loaded machine only makes it slower."""
import os
import random
import signal
import subprocess
import sys
import time

import torch

from jigsaw.permutations import make_permutations, save_permutations

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cmd(store, perms, out):
    return [sys.executable, "-m", "jigsaw.cli", "train", "--data", store, "--permutations", perms,
            "--out", str(out), "--batch-size", "8", "--width", "0.125", "--val-fraction", "0.25",
            "--max-iter", "16", "--snapshot", "2", "--test-interval", "0", "--no-progress", "--device", "cpu",
            "--log-every", "1", "--recipe", "paper",  # a hand-made 256 px store: the square layout
            "--resume", "auto"]


def _rows(out):
    try:
        with open(out / "log.csv") as f:
            return sum(1 for _ in f) - 1
    except FileNotFoundError:
        return 0


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
    subprocess.run(_cmd(store, perms, full), env=env, check=True, capture_output=True)
    cut = tmp_path / "cut"
    chooser = random.Random(1)
    kills = 0
    for attempt in range(6):
        target = _rows(cut) + chooser.randint(1, 4)  # a few iterations further each time
        proc = subprocess.Popen(_cmd(store, perms, cut), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        hang_guard = time.monotonic() + 600
        while proc.poll() is None and _rows(cut) < target and time.monotonic() < hang_guard:
            time.sleep(0.01)
        if proc.poll() is not None:
            assert proc.returncode == 0
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        if (cut / "last.pt").exists():
            torch.load(cut / "last.pt", weights_only=True)  # never corrupt
    else:
        r = subprocess.run(_cmd(store, perms, cut), env=env, capture_output=True)
        assert r.returncode == 0
    assert kills >= 1
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(cut / "last.pt", weights_only=True)
    assert a["iter"] == b["iter"] == 16
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [f for f in os.listdir(cut) if f.startswith(".tmp")] == []
