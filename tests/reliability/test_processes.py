"""Workers die with their parent (even after kill -9), and one output folder takes one run at a time."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tools.errors import UserError
from tools.runtime import lock_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PARENT = r"""
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
sys.path.insert(0, sys.argv[2])
from jigsaw.store import _init_worker

def work(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(3600)

with ProcessPoolExecutor(1, initializer=_init_worker) as pool:
    pool.submit(work, sys.argv[1])
    time.sleep(3600)
"""


def _wait_for(predicate, limit=120.0):
    """Poll for an event (never a fixed sleep as the test's logic); `limit` only bounds a broken run."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_prepare_workers_die_with_a_killed_parent(tmp_path):
    marker = str(tmp_path / "worker.pid")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, marker, ROOT])
    try:
        assert _wait_for(lambda: os.path.exists(marker)), "the worker never started"
        worker = int(open(marker).read())
        assert _alive(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert _wait_for(lambda: not _alive(worker)), "the worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_one_run_per_output_folder(tmp_path):
    held = lock_folder(str(tmp_path), "jigsaw train")
    try:
        with pytest.raises(UserError, match="another jigsaw train is using this folder"):
            lock_folder(str(tmp_path), "jigsaw train")
        r = subprocess.run([sys.executable, "-c", "import sys; from tools.runtime import lock_folder; "
                            "lock_folder(sys.argv[1], 'jigsaw train')", str(tmp_path)],
                           capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode != 0 and "another jigsaw train" in r.stderr
    finally:
        held.close()
    lock_folder(str(tmp_path), "jigsaw train").close()  # free again once the holder is gone
