"""atomic_open: the target appears whole or not at all; OS errors are one clear line."""
import os

import pytest

from tools.run.atomic import atomic_open
from tools.run.errors import DiskError, UserError


def test_failure_inside_the_block_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_open(str(target)) as f:
            f.write(b"half of the new cont")
            raise RuntimeError("disk gone")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["x.bin"]


def test_success_replaces(tmp_path):
    target = tmp_path / "x.txt"
    with atomic_open(str(target), "w") as f:
        f.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["x.txt"]


def test_unwritable_destination_is_a_clear_error(tmp_path):
    assert issubclass(DiskError, UserError)  # one line and exit 2 from every command line
    (tmp_path / "a-file").write_text("")
    with pytest.raises(DiskError, match=r"a-file: cannot create the output folder \(.*a-file is a file, not a folder\)"):
        with atomic_open(str(tmp_path / "a-file" / "x.bin")) as f:
            f.write(b"x")
    if os.path.isdir("/proc/self"):
        with pytest.raises(DiskError, match="cannot write"):
            with atomic_open("/proc/self/x.bin") as f:
                f.write(b"x")


def test_outputs_make_their_missing_folders(tmp_path):
    """Every -o may name a folder that does not exist yet (`jigsaw convert ... -o caffe/cfn`)."""
    from tools.run.atomic import atomic_files, atomic_open
    with atomic_open(str(tmp_path / "a" / "b" / "x.txt"), "w") as f:
        f.write("x")
    with atomic_files(str(tmp_path / "c" / "n.prototxt"), str(tmp_path / "d" / "n.caffemodel")) as (p, w):
        for temp in (p, w):
            with open(temp, "w") as f:
                f.write("y")
    assert (tmp_path / "a" / "b" / "x.txt").read_text() == "x" and (tmp_path / "d" / "n.caffemodel").exists()


def test_every_dash_o_makes_its_folder(tmp_path, monkeypatch, capsys):
    import torch

    from jigsaw.cfn import CFN
    from jigsaw.checkpoint import cfn_payload
    from jigsaw.cli import main as jigsaw
    from tools.caffe.cli import main as caffe_convert
    from tools.run.checkpoint import save_checkpoint
    from transfer.cli import main as transfer
    monkeypatch.chdir(tmp_path)
    save_checkpoint("w.pt", cfn_payload(CFN(4, width=0.125, seed=0), None, dict(recipe="jps", recipe_options={})))
    assert jigsaw(["permutations", "-n", "4", "-o", "new1/p.npy"]) == 0
    assert jigsaw(["convert", "w.pt", "-o", "caffe/cfn"]) == 0
    assert jigsaw(["convert", "caffe/cfn.caffemodel", "-o", "new2/back.pt"]) == 0
    assert caffe_convert(["caffe/cfn.prototxt", "caffe/cfn.caffemodel", "-o", "new3/x.pt"]) == 0
    assert transfer(["plot", "filters", "--weights", "w.pt", "-o", "new4/f.png"]) == 0
    for made in ("new1/p.npy", "caffe/cfn.caffemodel", "new2/back.pt", "new3/x.pt", "new4/f.png"):
        assert (tmp_path / made).stat().st_size > 0, made
    assert torch.load("new2/back.pt", weights_only=True)["recipe"] == "jps"
