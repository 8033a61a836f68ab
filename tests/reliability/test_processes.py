"""Workers die with their parent (even after kill -9), and one output folder takes one run at a time."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tools.run.errors import UserError
from tools.run.folder import lock_folder

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
        r = subprocess.run([sys.executable, "-c", "import sys; from tools.run.folder import lock_folder; "
                            "lock_folder(sys.argv[1], 'jigsaw train')", str(tmp_path)],
                           capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode != 0 and "another jigsaw train" in r.stderr
    finally:
        held.close()
    lock_folder(str(tmp_path), "jigsaw train").close()  # free again once the holder is gone


def _ip_net(width):
    """A net of one width x width InnerProduct, built quietly."""
    import warnings

    from tools import load_caffe_net
    text = (f'layer {{ name: "in" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: {width} }} }} }}\n'
            f'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: {width} }} }}\n')
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_caffe_net(text, seed=0), text


def _limited(limit):
    import resource

    def setup():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return setup


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics")
def test_a_pair_is_written_as_a_unit_and_a_full_disk_is_one_line(tmp_path):
    import torch

    from tools import save_caffe_net
    net, _ = _ip_net(64)
    save_caffe_net(net, str(tmp_path / "pair.prototxt"), str(tmp_path / "pair.caffemodel"))
    before = {n: (tmp_path / n).read_bytes() for n in ("pair.prototxt", "pair.caffemodel")}
    with torch.no_grad():
        net.layer("ip").weight.add_(1)
    save_caffe_net(net, str(tmp_path / "new.prototxt"), str(tmp_path / "new.caffemodel"))
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-m", "tools.caffe.cli", str(tmp_path / "new.prototxt"), str(tmp_path / "new.caffemodel"),
                        "-o", str(tmp_path / "new.pt")], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "tools.caffe.cli", str(tmp_path / "new.pt"), "-o", str(tmp_path / "pair")],
                       capture_output=True, text=True, cwd=ROOT, env=env, preexec_fn=_limited(2048))
    assert r.returncode == 2 and "cannot write" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # the old pair, whole
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
    r = subprocess.run([sys.executable, "-m", "tools.caffe.cli", str(tmp_path / "new.prototxt"), str(tmp_path / "new.caffemodel"),
                        "-o", str(tmp_path / "big.pt")], capture_output=True, text=True, cwd=ROOT, env=env,
                       preexec_fn=_limited(4096))
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and last.startswith("caffe-convert: error:") and "cannot write" in last, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "big.pt").exists()


def test_weights_that_match_no_layer_are_an_error(tmp_path):
    import warnings

    from tools import load_caffe_net, save_caffe_net
    a = 'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }\n'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(a + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                             'inner_product_param { num_output: 2 } }', seed=0)
    save_caffe_net(net, str(tmp_path / "a.prototxt"), str(tmp_path / "a.caffemodel"))
    other = a + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }'
    with pytest.raises(UserError, match="match none of"):
        load_caffe_net(other, str(tmp_path / "a.caffemodel"))


def test_weights_come_from_the_file_that_was_parsed(tmp_path):
    import numpy as np
    import torch

    from tools import CaffeNet, save_caffe_net
    from tools.caffe.caffemodel import read_caffemodel
    net, text = _ip_net(256)
    save_caffe_net(net, str(tmp_path / "a.prototxt"), str(tmp_path / "a.caffemodel"))
    want = net.layer("ip").weight.detach().clone()
    net_param, named = read_caffemodel(str(tmp_path / "a.caffemodel"))
    with torch.no_grad():
        net.layer("ip").weight.fill_(7)
    save_caffe_net(net, None, str(tmp_path / "b.caffemodel"))
    os.replace(tmp_path / "b.caffemodel", tmp_path / "a.caffemodel")  # another file now has the path
    from tools.caffe.prototxt import read_net
    back = CaffeNet(read_net(text), weights=named)
    assert torch.equal(back.layer("ip").weight, want) and not np.allclose(want.numpy(), 7)


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_train_from_a_folder_with_workers_leaves_none_behind(tmp_path, signum):
    import numpy as np
    from PIL import Image

    from jigsaw.permutations import make_permutations, save_permutations
    (tmp_path / "photos").mkdir()
    for i in range(8):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (280, 280, 3), dtype=np.uint8)).save(
            tmp_path / "photos" / f"{i}.png")
    save_permutations(str(tmp_path / "p.npy"), make_permutations(8))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "jigsaw.cli", "train", "--data", str(tmp_path / "photos"),
                             "--permutations", str(tmp_path / "p.npy"), "--out", str(out), "--workers", "2",
                             "--batch-size", "4", "--width", "0.125", "--max-iter", "100000", "--snapshot", "0",
                             "--test-interval", "0", "--val-fraction", "0.25", "--log-every", "1", "--no-progress"],
                            env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert _wait_for(lambda: (out / "log.csv").exists() and len((out / "log.csv").read_text().splitlines()) > 3,
                     300)
    workers = _children(proc.pid)
    assert len(workers) >= 2, workers  # the decoding processes
    proc.send_signal(signum)  # to the parent alone, as a scheduler or `kill` does
    code = proc.wait(timeout=120)
    assert code == (128 + signum if signum == signal.SIGTERM else -signum)
    assert _wait_for(lambda: not any(_alive(w) for w in workers))  # they die with it
    if signum == signal.SIGTERM:
        assert "resume with: jigsaw train --out" in proc.stderr.read().decode()
