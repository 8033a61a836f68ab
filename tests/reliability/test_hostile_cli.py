"""Hostile inputs against the three command lines, as a user would meet them (issue 15): each case runs
the real CLI in a subprocess under an address-space limit (a few GiB over what the imports need, so a
buffer sized by a file's header fails the test) and a hang guard, and must end with exit 2, one line
naming what is wrong, no traceback, and every file that was there before left byte for byte as it was."""
import json
import os
import pickle
import resource
import struct
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
           MALLOC_ARENA_MAX="2", CUDA_VISIBLE_DEVICES="")
HANG_GUARD_S = 300  # a case that needs this long has hung: the commands refuse in a few seconds
HEADROOM = 2 << 30  # what a command may allocate beyond its imports; every hostile header asks for more


def _imports_peak():
    """Peak address space of a process that has imported everything the commands import."""
    code = ("import torch, h5py, PIL.Image, jigsaw.train, transfer.finetune, tools.caffe.net; "
            "print([l for l in open('/proc/self/status') if l.startswith('VmPeak')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) * 1024


LIMIT = None


def _run(module, args, cwd):
    global LIMIT
    if LIMIT is None:
        LIMIT = _imports_peak() + HEADROOM

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], env=ENV, cwd=cwd, capture_output=True,
                          text=True, timeout=HANG_GUARD_S, preexec_fn=limit)


def _png(path, size=(80, 80), mode="RGB"):
    Image.new(mode, size, 120).save(path)


def _store(path, shape):
    import h5py
    with h5py.File(path, "w") as f:
        f.create_dataset("images", shape=shape, dtype="u1", chunks=(1, 64, 64, 3))


def _perms(path, n=4):
    np.save(path, np.array([np.random.default_rng(i).permutation(9) for i in range(n)]))


def _idx(folder, declared):
    """MNIST's four idx files, the training images' header declaring `declared` images of 28x28."""
    os.makedirs(folder, exist_ok=True)
    (open(os.path.join(folder, "train-images-idx3-ubyte"), "wb")
     .write(struct.pack(">IIII", 0x803, declared, 28, 28) + bytes(100)))
    for name, n in (("train-labels-idx1-ubyte", 10), ("t10k-labels-idx1-ubyte", 10)):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + bytes(i % 2 for i in range(n)))  # two classes
    with open(os.path.join(folder, "t10k-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 10, 28, 28) + bytes(10 * 784))


def _run_folder(t, stats_bytes):
    """A `transfer` run folder whose stats.pt is `stats_bytes`, ready for --resume."""
    _idx(t / "mnist", 10)
    with open(t / "mnist" / "train-images-idx3-ubyte", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 10, 28, 28) + bytes(10 * 784))
    run = t / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(dict(dataset="mnist", model="mlp", out=str(run),
                                                     data_root=str(t / "mnist"), phase="finetune")))
    (run / "stats.pt").write_bytes(stats_bytes)
    return ["finetune", "--out", run, "--resume"]


class Evil:  # a pickle that would run code if unpickled
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _prototxt(t, body):
    (t / "net.prototxt").write_text('layer { name: "data" type: "Input" top: "data" '
                                    'input_param { shape { dim: 1 dim: 768 } } }\n' + body)
    return t / "net.prototxt"


# name: (module, builder(tmp) -> argv, what stderr must say)
CASES = {
    "store declaring 8 images of 15000x15000": ("jigsaw.cli", lambda t: (
        _store(t / "s.h5", (8, 15000, 15000, 3)), _perms(t / "p.npy"),
        ["train", "--data", t / "s.h5", "--permutations", t / "p.npy", "--out", t / "o"])[-1], "declares"),
    "forged .npy header of 2.9 GB": ("jigsaw.cli", lambda t: (
        _store(t / "s.h5", (2, 256, 256, 3)),
        (t / "p.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) +
                                  ("{'descr': '<i8', 'fortran_order': False, 'shape': (40000000, 9), }"
                                   .ljust(117) + "\n").encode() + bytes(64)),
        ["train", "--data", t / "s.h5", "--permutations", t / "p.npy", "--out", t / "o"])[-1], "header declares"),
    "empty (0, 9) permutation set": ("jigsaw.cli", lambda t: (
        _store(t / "s.h5", (2, 256, 256, 3)), np.save(t / "p.npy", np.zeros((0, 9), np.int64)),
        ["train", "--data", t / "s.h5", "--permutations", t / "p.npy", "--out", t / "o"])[-1], "no permutations"),
    "permutations .h5 with an external link": ("jigsaw.cli", lambda t: (
        _store(t / "s.h5", (2, 256, 256, 3)), _h5_link(t),
        ["train", "--data", t / "s.h5", "--permutations", t / "link.h5", "--out", t / "o"])[-1], "link"),
    "prepare -o an existing folder": ("jigsaw.cli", lambda t: (
        (t / "src").mkdir(), _png(t / "src" / "a.png"), (t / "out").mkdir(),
        ["prepare", t / "src", "-o", t / "out"])[-1], "folder"),
    "prepare --list naming a folder": ("jigsaw.cli", lambda t: (
        (t / "src").mkdir(), _png(t / "src" / "a.png"),
        ["prepare", t / "src", "-o", t / "s.h5", "--list", t / "src"])[-1], "is a folder"),
    "a 9000x8000 PNG, the only image": ("jigsaw.cli", lambda t: (
        (t / "src").mkdir(), _png(t / "src" / "big.png", (9000, 8000), "L"),
        ["prepare", t / "src", "-o", t / "s.h5"])[-1], "huge"),
    "InnerProduct 768 -> 2,000,000 for --summary": ("tools.caffe.cli", lambda t: [
        _prototxt(t, 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                     'inner_product_param { num_output: 2000000 } }'), "--summary"], "NEEDS_ZERO"),
    "Flatten with axis after end_axis": ("tools.caffe.cli", lambda t: [
        _prototxt(t, 'layer { name: "f" type: "Flatten" bottom: "data" top: "f" '
                     'flatten_param { axis: 1 end_axis: 0 } }'), "--summary"], "axis"),
    "HDF5 caffemodel whose /data is not a group": ("tools.caffe.cli", lambda t: (
        _h5_data(t), [_prototxt(t, 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                                   'inner_product_param { num_output: 2 } }'), t / "w.caffemodel.h5",
                      "-o", t / "w.pt"])[-1], "not a group"),
    "a 0-byte .pt to caffe-convert": ("tools.caffe.cli", lambda t: (
        (t / "e.pt").write_bytes(b""), [t / "e.pt", "-o", t / "pair"])[-1], "e.pt"),
    "a 0-byte .pt as transfer --weights": ("transfer.cli", lambda t: (
        (t / "e.pt").write_bytes(b""), _idx(t / "m", 10),
        ["finetune", "--dataset", "fashion-mnist", "--model", "cfn", "--weights", t / "e.pt", "--out",
         t / "o"])[-1], "e.pt"),
    "a .pth holding a list": ("transfer.cli", lambda t: (
        _torch_save(t / "l.pth", [1, 2, 3]),
        ["finetune", "--dataset", "fashion-mnist", "--model", "resnet50", "--weights", t / "l.pth", "--out",
         t / "o"])[-1], "not a state_dict"),
    "idx header declaring 2e9 bytes on a 116-byte file": ("transfer.cli", lambda t: (
        _idx(t / "m", 2_500_000),
        ["finetune", "--dataset", "mnist", "--data-root", t / "m", "--model", "mlp", "--out", t / "o"])[-1],
     "declares"),
    "a pickle stats.pt on --resume": ("transfer.cli", lambda t: _run_folder(t, pickle.dumps(Evil())), "stats.pt"),
    "a truncated stats.pt on --resume": ("transfer.cli", lambda t: _run_folder(t, b"PK\x03\x04" + bytes(20)),
                                         "stats.pt"),
    "a head spec 10,dropout:abc": ("transfer.cli", lambda t: (
        ["finetune", "--dataset", "fashion-mnist", "--model", "mlp", "--head", "10,dropout:abc", "--out",
         t / "o"]), "head spec"),
    "a used --out without --resume": ("transfer.cli", lambda t: (
        (t / "o").mkdir(), (t / "o" / "summary.json").write_text("{}"),
        ["finetune", "--dataset", "fashion-mnist", "--model", "mlp", "--out", t / "o"])[-1], "already holds"),
    "a --config file with batch_size \"abc\"": ("transfer.cli", lambda t: (
        (t / "c.json").write_text('{"dataset": "fashion-mnist", "model": "mlp", "batch_size": "abc"}'),
        ["finetune", "--config", t / "c.json", "--out", t / "o"])[-1], "setting 'batch_size' is 'abc'"),
    "a run record with width \"wide\" on jigsaw --resume": ("jigsaw.cli", lambda t: (
        (t / "run").mkdir(), (t / "run" / "config.json").write_text(json.dumps(dict(
            data=str(t / "s.h5"), permutations=str(t / "p.npy"), width="wide"))),
        ["train", "--out", t / "run", "--resume"])[-1], "setting 'width' is 'wide'"),
    "--resume where no run is": ("transfer.cli", lambda t: ["finetune", "--out", t / "none", "--resume"],
                                 "no run to resume"),
}


def _h5_link(t):
    import h5py
    with h5py.File(t / "other.h5", "w") as f:
        f.create_dataset("permutations", data=np.tile(np.arange(9), (2, 1)))
    with h5py.File(t / "link.h5", "w") as f:
        f["permutations"] = h5py.ExternalLink(str(t / "other.h5"), "/permutations")


def _h5_data(t):
    import h5py
    with h5py.File(t / "w.caffemodel.h5", "w") as f:
        f.create_dataset("data", data=np.zeros(3))


def _torch_save(path, obj):
    import torch
    torch.save(obj, path)


def _snapshot(folder):
    out = {}
    for base, dirs, files in os.walk(folder):
        out.update({os.path.relpath(os.path.join(base, d), folder) + "/": None for d in dirs})
        for name in files:
            path = os.path.join(base, name)
            if os.path.isfile(path):
                with open(path, "rb") as f:
                    out[os.path.relpath(path, folder)] = f.read()
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input_is_one_line_exit_2_bounded_and_changes_nothing(tmp_path, name):
    module, build, needle = CASES[name]
    work = tmp_path / "w"
    work.mkdir()
    argv = build(work)
    before = _snapshot(work)
    r = _run(module, argv, work)
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr[-2000:]
    if needle == "NEEDS_ZERO":  # the command has nothing wrong to say: it must simply fit in the limit
        assert r.returncode == 0, r.stderr[-2000:]
    else:
        lines = [line for line in r.stderr.strip().splitlines() if "%|" not in line and line.strip()]  # not bars
        assert r.returncode == 2 and len(lines) == 1 and ": error: " in lines[0], r.stderr[-2000:]
        assert needle in lines[0], lines[0]
    after = _snapshot(work)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing there before was changed
    if needle != "NEEDS_ZERO":  # and a refused command leaves nothing new: no folder, no lock
        assert sorted(after) == sorted(before), sorted(set(after) - set(before))
    assert not (work / "PWNED").exists()
