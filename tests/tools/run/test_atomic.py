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
    with pytest.raises(DiskError, match=r"missing/x.bin: cannot write \(No such file or directory\)"):
        with atomic_open(str(tmp_path / "missing" / "x.bin")) as f:
            f.write(b"x")
    if os.path.isdir("/proc/self"):
        with pytest.raises(DiskError, match="cannot write"):
            with atomic_open("/proc/self/x.bin") as f:
                f.write(b"x")
