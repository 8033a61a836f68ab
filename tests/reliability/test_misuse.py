"""Misuse of the command-line tools and hostile environments: one line, exit 2, nothing half-written."""
import os
import resource
import signal
import subprocess
import sys

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIS = {"caffe-convert": "tools.caffe.cli", "jigsaw": "jigsaw.cli", "transfer": "transfer.cli"}


def cli(module, *args, preexec=None):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), preexec_fn=preexec, timeout=300)


@pytest.mark.parametrize("prog", sorted(CLIS))
def test_help_is_complete(prog):
    r = cli(CLIS[prog], "--help")
    assert r.returncode == 0 and "examples:" in r.stdout and prog in r.stdout


@pytest.mark.parametrize("prog,sub", [("caffe-convert", []), ("caffe-convert", ["classify"]), ("jigsaw", []),
                                      ("jigsaw", ["train"]), ("transfer", []), ("transfer", ["finetune"])])
def test_every_command_has_a_version(prog, sub):
    from importlib import metadata
    r = cli(CLIS[prog], *sub, "--version")
    assert r.returncode == 0 and r.stdout.split()[-1] == metadata.version("jigsaw-cfn"), (r.stdout, r.stderr)


@pytest.mark.parametrize("prog,args,expect", [
    ("caffe-convert", ["net.prototxt", "--bogus"], "unrecognized arguments"),
    ("caffe-convert", ["/no/such.prototxt", "-o", "x.pt"], "no such file"),
    ("jigsaw", ["train", "--data", "/no/store.h5", "--permutations", "/no/p.npy", "--out", "OUT"], "error:"),
    ("jigsaw", ["permutations", "-n", "0", "-o", "p.npy"], "must be at least 1"),
    ("jigsaw", ["prepare", "/no/folder", "-o", "s.h5"], "not a folder"),
    ("jigsaw", ["frobnicate"], "invalid choice"),
    ("transfer", ["finetune", "--dataset", "mnist", "--data-root", "/no/mnist", "--model", "mlp", "--out", "OUT"],
     "no such folder"),
    ("transfer", ["run", "no-such-recipe", "--out", "OUT"], "unknown recipe"),
    ("transfer", ["finetune", "--dataset", "mnist", "--model", "mlp", "--out", "OUT", "--augment", "spin=3"],
     "unknown augmentation"),
])
def test_wrong_flags_and_missing_files_exit_2_with_one_line(tmp_path, prog, args, expect):
    args = [str(tmp_path / "OUT") if a == "OUT" else a for a in args]
    r = cli(CLIS[prog], *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert expect in r.stderr and "Traceback" not in r.stderr
    assert len([l for l in r.stderr.splitlines() if "error" in l]) == 1


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write fails with EFBIG instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_disk_full_gives_a_clear_error_and_keeps_the_old_file(tmp_path):
    from jigsaw.permutations import make_permutations, save_permutations
    out = tmp_path / "p.npy"
    save_permutations(str(out), make_permutations(10))
    before = out.read_bytes()
    r = cli("jigsaw.cli", "permutations", "-n", "5000", "-o", out, preexec=_limit_file_size)
    assert r.returncode == 2 and "cannot write" in r.stderr and "Traceback" not in r.stderr
    assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["p.npy"]


def test_unwritable_output_folder_fails_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder is expected")
    r = cli("jigsaw.cli", "permutations", "-n", "10", "-o", blocker / "p.npy")
    assert r.returncode == 2 and f"cannot create the output folder ({blocker} is a file, not a folder)" in r.stderr
    r = cli("tools.caffe.cli", "/proc/self/status", "-o", "/proc/self/x.pt")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_huge_images_are_skipped_not_fatal(tmp_path, monkeypatch):
    from PIL import Image as PILImage
    from jigsaw.images import BadImage, load_image
    path = tmp_path / "big.png"
    PILImage.new("RGB", (400, 400)).save(path)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 10_000)  # 160,000 px is then a "bomb"
    with pytest.raises(BadImage, match="huge"):
        load_image(str(path))


def test_demo_runs_end_to_end(tmp_path):
    pytest.importorskip("skimage")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "demo.py"), "--out", str(tmp_path / "demo"),
                        "--iters", "20", "--labelled", "photos"], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for needle in ("round trip identical: True", "pretext accuracy", "fine-tune test accuracy (folder)",
                   "which photograph a crop comes from"):
        assert needle in r.stdout
    for name in ("pretrain/curves.png", "finetune/curves.png", "finetune/filters.png", "cfn.caffemodel",
                 "photos/SOURCES.txt"):
        assert (tmp_path / "demo" / name).exists(), name
    assert "CC0" in (tmp_path / "demo" / "photos" / "SOURCES.txt").read_text()


@pytest.mark.parametrize("args", [
    ["jigsaw.cli", "prepare", "PHOTOS", "-o", "BLOCK/store.h5"],
    ["transfer.cli", "finetune", "--dataset", "folder", "--data-root", "PHOTOS", "--model", "mlp", "--out", "BLOCK/run"],
])
def test_output_folder_that_cannot_be_created(tmp_path, args):
    photos = tmp_path / "photos"
    for c in ("a", "b"):
        (photos / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (300, 300), (i, 2, 3)).save(photos / c / f"{i}.jpg")
    block = tmp_path / "block"
    block.write_text("a file where a folder should go")
    args = [str(photos) if a == "PHOTOS" else a.replace("BLOCK", str(block)) for a in args]
    r = cli(*args)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "cannot" in r.stderr and str(block) in r.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it(tmp_path):
    r = cli("jigsaw.cli", "train", "--data", "/no/store.h5", "--permutations", "/no/p.npy", "--out",
            tmp_path / "o", "--device", "cuda")
    assert r.returncode == 2 and "no CUDA device" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name, data, said", [
    ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    ("deep.yaml", b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
    ("latin1.json", b'{"dataset": "caf\xe9"}', "not UTF-8"),
    ("huge.json", b'{"dataset": "' + b"x" * (2 << 20) + b'"}', "over 1024 KiB"),
])
def test_a_hostile_settings_file_is_one_line(tmp_path, name, data, said):  # issue 26 §6
    from transfer.catalog import read_settings
    from tools.run.errors import UserError
    (tmp_path / name).write_bytes(data)
    with pytest.raises(UserError, match=said):
        read_settings(str(tmp_path / name))


def test_a_nul_byte_in_a_list_file_is_one_line(tmp_path):  # issue 26 §7
    from jigsaw.images import list_images
    from tools.run.errors import UserError
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "list.txt").write_bytes(b"a.jpg 0\nb\x00c.jpg 1\n")
    with pytest.raises(UserError, match="NUL byte"):
        list_images(str(tmp_path), str(tmp_path / "list.txt"))


@pytest.mark.parametrize("n, needle", [((0, 10), "the train idx files hold no images"),
                                       ((30, 0), "the test idx files hold no images"),
                                       ((1, 1), "one class only"),
                                       ((2, 2), "cannot give both a validation split")])
def test_tiny_and_degenerate_datasets_are_one_line(tmp_path, n, needle):  # issue 26 §5
    from tests.transfer.test_datasets import mnist_like
    from transfer.datasets import DatasetError, load_dataset
    with pytest.raises(DatasetError, match=needle):
        load_dataset("fashion-mnist", mnist_like(str(tmp_path / "fm"), n=n), 0.15, 0)


def test_too_few_images_for_the_validation_split_is_one_line():
    from jigsaw.batches import split_indices
    from tools.run.errors import UserError
    with pytest.raises(UserError, match="1 image.* cannot hold out 1 for validation"):
        split_indices(1, 0.05, 0)


@pytest.mark.parametrize("flag", ["--head-solver", "--finetune-solver"])
def test_a_solver_option_naming_a_net_is_one_line_before_anything_runs(tmp_path, capsys, flag):  # issue 26 §4
    from transfer.cli import main
    net = os.path.join(ROOT, "prototxt", "cfn_deploy.prototxt")
    code = main(["finetune", "--dataset", "fashion-mnist", "--model", "mlp", flag, net, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "no solver settings in it" in err and err.count("\n") == 1, err[-2000:]
    assert not (tmp_path / "o").exists()


def test_compare_names_what_a_folder_lacks(tmp_path):
    """`transfer compare` on folders that are not finished runs: one line naming the missing record."""
    import json as _json
    from transfer.compare import compare
    from tools.run.errors import UserError
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: not a finished transfer run \\(no config.json\\)"):
        compare([str(tmp_path / "empty")])
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text(_json.dumps({"dataset": "d"}))
    with pytest.raises(UserError, match="half: not a finished transfer run \\(no summary.json\\)"):
        compare([str(tmp_path / "half")])
    (tmp_path / "half" / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="summary.json: not a run summary \\(no test_accuracy number\\)"):
        compare([str(tmp_path / "half")])
    (tmp_path / "half" / "summary.json").write_text('{"test_accuracy": 0.5')  # cut short
    with pytest.raises(UserError, match="summary.json: not a run summary \\(summary.json\\) \\(JSONDecodeError"):
        compare([str(tmp_path / "half")])
