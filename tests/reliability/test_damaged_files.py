"""The damaged files the fuzzer found (issue 33), one per root cause, each a traceback, a crash or an allocation
sized by a header before: read by the project's readers they are one line; from each command line that reads
them, one line and exit 2 (run as test_hostile_cli runs its cases: an address-space limit, nothing changed)."""
import os
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from tools.run.errors import DatasetError, UserError

from .test_hostile_cli import ENV, _run, _snapshot


# --- the damaged files ----------------------------------------------------------------------------------------

def bad_deflate_idx(folder):
    """Fashion-MNIST whose training images' deflate stream is damaged: zlib.error escaped read_idx."""
    from tests.transfer.test_datasets import mnist_like
    root = mnist_like(str(folder))
    path = os.path.join(root, "train-images-idx3-ubyte.gz")
    data = bytearray(open(path, "rb").read())
    start = data.index(0, 10) + 1 if data[3] & 8 else 10  # after the header (and the file name gzip.open keeps)
    data[start] = 0xFF  # the first deflate block's type: 11, reserved
    open(path, "wb").write(bytes(data))
    return root, path


def wrapping_idx(folder):
    """Raw MNIST whose labels header declares 2^31 x 2^31 x 2: int64 wrapped to a negative read length."""
    from tests.transfer.test_datasets import mnist_like
    root = mnist_like(str(folder), gz=False)
    path = os.path.join(root, "train-labels-idx1-ubyte")
    open(path, "wb").write(bytes([0, 0, 8, 3]) + struct.pack(">III", 1 << 31, 1 << 31, 2) + b"\x00" * 64)
    return root, path


def cut_header_idx(folder):
    """Raw MNIST whose images header stops inside its dims: NumPy's 'buffer size must be a multiple'."""
    from tests.transfer.test_datasets import mnist_like
    root = mnist_like(str(folder), gz=False)
    path = os.path.join(root, "t10k-images-idx3-ubyte")
    open(path, "wb").write(bytes([0, 0, 8, 3]) + b"\x00\x00\x00\x0a\x00\x00")
    return root, path


CIFAR_DAMAGE = {  # each a CIFAR-100 'train' pickle; what escaped before
    "undecodable text": b"\x80\x02X\x02\x00\x00\x00\xff\xfe.",  # UnicodeDecodeError
    "a frame header cut short": b"\x80\x04\x95\x01",  # Python's unpickler: struct.error (the fuzzer, seed 33)
    "a memo index of 2^32 - 16": b"\x80\x02N" + b"r" + struct.pack("<I", 0xFFFFFFF0) + b".",  # C memo sized by it
    "a bytearray of 2^40 bytes": b"\x80\x05\x96" + struct.pack("<Q", 1 << 40) + b".",  # allocated as declared
    "an array reconstructed at 2^40 elements":  # numpy's _reconstruct allocates the shape it is given
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + b"\x8a\x06" + (1 << 40).to_bytes(6, "little") +
        b"\x85" + b"C\x01b" + b"\x87R.",
}


def damaged_cifar(folder, damage):
    from tests.transfer.test_datasets import cifar_fixture
    base = cifar_fixture(str(folder))
    path = os.path.join(base, "train")
    open(path, "wb").write(CIFAR_DAMAGE[damage])
    return str(folder), path


def undecodable_cub(folder):
    from tests.transfer.test_datasets import cub_fixture
    base = cub_fixture(str(folder))
    path = os.path.join(base, "images.txt")
    open(path, "ab").write(b"9 \x80\x81.jpg\n")  # UnicodeDecodeError from the text reader
    return str(folder), path


def bad_label_cub_lists(folder):
    from tests.reliability.fuzz_corpus import _cub_lists
    base, _ = _cub_lists(str(folder))
    path = os.path.join(base, "test.txt")
    open(path, "a").write("001.Bird/img_0.jpg \x7f\n")  # int('\x7f'): a ValueError escaped
    return base, path


def undecodable_voc(folder):
    from tests.transfer.test_voc07 import voc_like
    root, _ = voc_like(str(folder), size=16)
    path = os.path.join(root, "VOC2007", "ImageSets", "Main", "dog_trainval.txt")
    open(path, "ab").write(b"\xff\xfe 1\n")
    return root, path


def broken_npy(folder):
    """A .npy header whose dictionary is never closed: tokenize.TokenError escaped np.load's header parser."""
    head = b"{'descr': '<i8', 'fortran_order': False, 'shape': (3, 9), "
    head += b" " * (118 - len(head)) + b"\n"
    path = os.path.join(str(folder), "p.npy")
    open(path, "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head + b"\x00" * 216)
    return path


def broken_h5(folder):
    """A permutations .h5 whose symbol table node lost its signature: h5py's RuntimeError escaped."""
    import h5py
    from jigsaw.permutations import make_permutations, save_permutations
    path = os.path.join(str(folder), "p.h5")
    save_permutations(path, make_permutations(8))
    data = open(path, "rb").read()
    at = data.find(b"SNOD")
    open(path, "wb").write(data[:at] + b"XXXX" + data[at + 4:])
    with h5py.File(path, "r") as f, pytest.raises(RuntimeError, match="bad symbol table node signature"):
        "permutations" in f  # what the reader asks first; the damage must reach it as before
    return path


def truncated_lmdb(folder):
    """A Caffe LMDB cut short: the LMDB library maps past the end of the file and dies of SIGBUS."""
    from tests.reliability.fuzz_corpus import _lmdb
    path, _ = _lmdb(str(folder))
    data = os.path.join(path, "data.mdb")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.truncate(size - 3 * 4096)
    return path


def oversized_zip(folder):
    """A checkpoint whose zip directory declares a 1 TB record: torch's reader sizes a buffer by it."""
    import torch
    path = os.path.join(str(folder), "last.pt")
    torch.save({"w": torch.zeros(4)}, path)
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as z:
        name = z.infolist()[-1].filename.encode()
    at = data.rfind(b"PK\x01\x02")  # the last central directory entry: its uncompressed size at +24
    assert data[at + 46:at + 46 + len(name)] == name
    data[at + 24:at + 28] = struct.pack("<I", 0xFFFFFFF0)
    open(path, "wb").write(bytes(data))
    return path


def oversized_legacy_pickle(folder):
    """A checkpoint in torch's legacy format (a bare pickle, no zip directory) whose first record, a string,
    declares 4 GB: torch's unpickler reads what it declares (the fuzzer's vissl-checkpoint case 47, seed
    2270645604, found it as a MemoryError traceback)."""
    import io
    import torch
    path = os.path.join(str(folder), "legacy.pt")
    legacy = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, legacy, _use_new_zipfile_serialization=False)
    open(path, "wb").write(b"\x80\x02X" + struct.pack("<I", 0xFFFFFFF0) + legacy.getvalue())
    return path


# --- the readers ----------------------------------------------------------------------------------------------

def _in_bounded_child(imports: str, call: str, arg) -> str:
    """What `call` prints of the one-line error it raises, in a child whose address space ends 1 GiB above what
    it holds once torch and `imports` are loaded: an allocation sized by what the file declares fails there."""
    code = (f"import resource, sys, torch\n{imports}\n"
            "from tools.run.errors import UserError\n"
            "vm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize')][0]\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))\n"
            f"try:\n    {call}\n"
            "except UserError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code, str(arg)], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and not r.stderr, r.stderr[-2000:]
    return r.stdout


@pytest.mark.parametrize("make", [bad_deflate_idx, wrapping_idx, cut_header_idx])
def test_damaged_idx_files_are_one_line(tmp_path, make):
    from transfer.datasets import load_dataset
    root, path = make(tmp_path / "d")
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", root)
    assert str(e.value).startswith(path) and "\n" not in str(e.value)


@pytest.mark.parametrize("damage", sorted(CIFAR_DAMAGE))
def test_damaged_cifar_pickles_are_one_line_without_a_header_sized_allocation(tmp_path, damage):
    """In a child whose address space ends 1 GiB above what it holds: an allocation the file declares fails."""
    root, path = damaged_cifar(tmp_path, damage)
    out = _in_bounded_child("from transfer.datasets import load_dataset", "load_dataset('cifar100', sys.argv[1])",
                            root)
    assert out.startswith(path) and out.count("\n") == 1, out


@pytest.mark.parametrize("make", [undecodable_cub, bad_label_cub_lists])
def test_damaged_cub_lists_are_one_line(tmp_path, make):
    from transfer.datasets import load_dataset
    root, path = make(tmp_path)
    with pytest.raises(DatasetError, match="^" + path):
        load_dataset("cub200", root)


def test_damaged_voc_lists_are_one_line(tmp_path):
    from transfer.datasets import load_dataset
    root, path = undecodable_voc(tmp_path)
    with pytest.raises(DatasetError, match="^" + path):
        load_dataset("voc2007", root)


@pytest.mark.parametrize("make", [broken_npy, broken_h5])
def test_damaged_permutation_files_are_one_line(tmp_path, make):
    from jigsaw.permutations import load_permutations
    path = make(tmp_path)
    with pytest.raises(UserError, match="^" + path + ": not a permutation file"):
        load_permutations(path)


def test_a_truncated_lmdb_is_one_line_not_a_crash(tmp_path):
    path = truncated_lmdb(tmp_path)
    code = "import sys\nfrom jigsaw.lmdb_source import LmdbRecords\nr = LmdbRecords(sys.argv[1])\n" \
           "print(sum(len(v) for _, v in r.values()))\n"
    r = subprocess.run([sys.executable, "-c", code, path], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        f"tools.run.errors.UserError: {path}/data.mdb: not a readable LMDB ("), r.stderr[-2000:]


def test_the_lmdb_reader_reads_what_the_lmdb_library_wrote(tmp_path):
    """Many records (a tree three levels deep), values on overflow pages, a second transaction's deletions."""
    lmdb = pytest.importorskip("lmdb")
    from jigsaw.lmdb_pages import LmdbPages
    rng = np.random.default_rng(0)
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 27)
    records = {}
    with env.begin(write=True) as txn:
        for k in range(2500):
            key = f"{int(rng.integers(1e9)):010d}_{k}".encode()
            records[key] = rng.integers(0, 256, int(rng.choice([0, 10, 2000, 5000, 30000])), dtype=np.uint8).tobytes()
            txn.put(key, records[key])
    with env.begin(write=True) as txn:
        for key in list(records)[::7]:
            txn.delete(key)
            del records[key]
    env.close()
    pages = LmdbPages(str(tmp_path / "db"))
    assert pages.depth >= 3 and pages.keys() == sorted(records)
    assert all(pages.value(i) == records[k] for i, k in enumerate(pages.keys()))


def test_a_checkpoint_whose_zip_declares_a_huge_record_is_refused_before_torch_reads_it(tmp_path):
    from tools.run.checkpoint import load_checkpoint
    path = oversized_zip(tmp_path)
    with pytest.raises(UserError, match="declares 4294967280 bytes"):
        load_checkpoint(path)


def test_a_legacy_checkpoint_whose_record_declares_4_gb_is_one_line_in_a_bounded_address_space(tmp_path):
    """In a child whose address space ends 1 GiB above what it holds, as the fuzzer runs its cases."""
    path = oversized_legacy_pickle(tmp_path)
    out = _in_bounded_child("from tools.run.checkpoint import load_checkpoint", "load_checkpoint(sys.argv[1])", path)
    assert out.startswith(path + ": not a loadable checkpoint") and out.count("\n") == 1, out


def test_new_stores_keep_their_layout_outside_hdf5s_global_heap(tmp_path):
    """A variable-length string attribute lives in the global heap, and a damaged global heap makes libhdf5
    spin forever reading it (the fuzzer's runaway loop): stores write the layout fixed-length."""
    import h5py
    from tests.reliability.fuzz_corpus import _store
    from jigsaw.store import ImageStore
    _store(str(tmp_path))
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert not h5py.check_string_dtype(h5py.h5a.open(f.id, b"layout").dtype) or \
            h5py.check_string_dtype(h5py.h5a.open(f.id, b"layout").dtype).length is not None
    assert ImageStore(str(tmp_path / "s.h5")).layout == "square"


# --- the command lines --------------------------------------------------------------------------------------

CLI_CASES = {
    "finetune on Fashion-MNIST with a damaged deflate stream": ("transfer.cli", lambda t: (lambda r: (
        ["finetune", "--dataset", "fashion-mnist", "--data-root", r[0], "--model", "mlp", "--out", t / "o"],
        r[1]))(bad_deflate_idx(t / "fm"))),
    "probe on MNIST whose header wraps int64": ("transfer.cli", lambda t: (lambda r: (
        ["probe", "--dataset", "mnist", "--data-root", r[0], "--model", "mlp", "--out", t / "o"], r[1]))(
        wrapping_idx(t / "m"))),
    "finetune on CIFAR-100 whose pickle names a memo index of 2^32 - 16": ("transfer.cli", lambda t: (lambda r: (
        ["finetune", "--dataset", "cifar100", "--data-root", r[0], "--model", "basenet", "--out", t / "o"],
        r[1]))(damaged_cifar(t, "a memo index of 2^32 - 16"))),
    "run (a recipe) on damaged CIFAR-100": ("transfer.cli", lambda t: (lambda r: (
        ["run", "cifar25-basenet", "--data-root", r[0], "--out", t / "o"], r[1]))(
        damaged_cifar(t, "undecodable text"))),
    "finetune on CUB-200 with an undecodable images.txt": ("transfer.cli", lambda t: (lambda r: (
        ["finetune", "--dataset", "cub200", "--data-root", r[0], "--model", "basenet", "--out", t / "o"],
        r[1]))(undecodable_cub(t))),
    "probe on a CUB-200 list with a bad label": ("transfer.cli", lambda t: (lambda r: (
        ["probe", "--dataset", "cub200", "--data-root", r[0], "--model", "basenet", "--out", t / "o"],
        r[1]))(bad_label_cub_lists(t))),
    "probe on VOC07 with an undecodable list": ("transfer.cli", lambda t: (lambda r: (
        ["probe", "--dataset", "voc2007", "--data-root", r[0], "--model", "basenet", "--out", t / "o"],
        r[1]))(undecodable_voc(t))),
    "train --permutations with a broken .npy header": ("jigsaw.cli", lambda t: (
        ["train", "--data", t / "s.h5", "--permutations", broken_npy(t), "--out", t / "run"], t / "p.npy")),
    "train --permutations with a damaged .h5": ("jigsaw.cli", lambda t: (
        ["train", "--data", t / "s.h5", "--permutations", broken_h5(t), "--out", t / "run"], t / "p.h5")),
    "prepare from a truncated LMDB": ("jigsaw.cli", lambda t: (
        ["prepare", truncated_lmdb(t), "-o", t / "s.h5", "--min-side", "16"], "data.mdb: not a readable LMDB")),
    "evaluate a checkpoint whose zip declares 4 GB": ("jigsaw.cli", lambda t: (
        ["evaluate", "--weights", oversized_zip(t), "--data", t / "s.h5"], "declares 4294967280 bytes")),
    "evaluate a legacy-format checkpoint whose first record declares 4 GB": ("jigsaw.cli", lambda t: (
        ["evaluate", "--weights", oversized_legacy_pickle(t), "--data", t / "s.h5"], "legacy.pt: not ")),
}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_each_command_line_says_a_damaged_file_in_one_line_and_exits_2(tmp_path, name):
    module, build = CLI_CASES[name]
    work = tmp_path / "w"
    work.mkdir()
    argv, needle = build(work)
    before = _snapshot(work)
    r = _run(module, argv, work)
    lines = [line for line in r.stderr.strip().splitlines() if "%|" not in line and line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and ": error: " in lines[0], r.stderr[-3000:]
    assert str(needle) in lines[0], lines[0]
    assert _snapshot(work) == before  # nothing written: no output folder, no lock


# --- the other command-line findings -------------------------------------------------------------------------

def test_prepare_into_a_read_only_folder_is_one_line(tmp_path):
    """A read-only file system (a tmpfs mounted read-only in a private mount namespace) under the output."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("needs root and unshare to mount a read-only file system")
    from PIL import Image
    (tmp_path / "imgs").mkdir()
    (tmp_path / "ro").mkdir()
    Image.new("RGB", (300, 300), 90).save(tmp_path / "imgs" / "a.png")
    script = (f"mount -t tmpfs -o ro none {tmp_path / 'ro'} || exit 77; "
              f"exec {sys.executable} -m jigsaw.cli prepare {tmp_path / 'imgs'} -o {tmp_path / 'ro' / 's.h5'}")
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=ENV,
                       capture_output=True, text=True, timeout=300)
    if r.returncode == 77:
        pytest.skip("mounting a read-only tmpfs is not allowed here")
    assert r.returncode == 2 and r.stderr.strip() == (
        f"jigsaw: error: {tmp_path / 'ro' / 's.h5.lock'}: cannot create the lock file (Read-only file system); "
        "the output's folder must be writable"), r.stderr[-2000:]


def test_convert_refuses_a_prototxt_that_is_not_the_weights_net(tmp_path, capsys):
    from jigsaw.caffe_form import to_caffe
    from jigsaw.cfn import CFN
    from jigsaw.cli import main
    to_caffe(CFN(6, width=0.125, seed=0), str(tmp_path / "cfn.prototxt"), str(tmp_path / "cfn.caffemodel"))
    (tmp_path / "other.prototxt").write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }\n')
    wider = (tmp_path / "cfn.prototxt").read_text().replace("num_output: 12", "num_output: 13", 1)
    (tmp_path / "wider.prototxt").write_text(wider)
    for proto, said in (("other.prototxt", "not the net of"), ("wider.prototxt", "has num_output 13")):
        code = main(["convert", str(tmp_path / "cfn.caffemodel"), "--prototxt", str(tmp_path / proto), "-o",
                     str(tmp_path / "x.pt")])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and said in err, err
        assert not (tmp_path / "x.pt").exists()
    assert main(["convert", str(tmp_path / "cfn.caffemodel"), "--prototxt", str(tmp_path / "cfn.prototxt"), "-o",
                 str(tmp_path / "x.pt")]) == 0  # its own net passes


def test_plot_activations_refuses_indices_outside_the_layer(tmp_path, capsys):
    from tests.transfer.test_datasets import mnist_like
    from transfer.cli import main
    root = mnist_like(str(tmp_path / "m"), n=(40, 10))
    assert main(["finetune", "--dataset", "mnist", "--data-root", root, "--model", "mlp", "--out",
                 str(tmp_path / "run"), "--phase", "head", "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    for indices, said in ((["1000000000"], "--indices 1000000000: layer 'head' has 10 units, numbered 0..9"),
                          (["-1", "3"], "--indices -1: layer 'head' has 10 units")):
        code = main(["plot", "activations", "--run", str(tmp_path / "run"), "--layer", "head", "--indices", *indices])
        err = capsys.readouterr().err
        assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err
