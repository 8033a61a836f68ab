"""RunFolder: a run folder's lock, start-or-resume, its records, and no trace of a refused start."""
import json
import os
import subprocess
import sys

import pytest

from tools.run.errors import UserError
from tools.run.folder import RunFolder, lock_folder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _start(path, resume=None, settings=None):
    folder = RunFolder(str(path), "test run", state=("config.json", "state.bin"))
    folder.decide(resume)
    folder.open()
    if settings is not None:
        folder.write(settings, resume_index=3 if folder.resuming else None)
    return folder


def test_a_start_records_config_json_and_a_resume_records_itself_beside_it(tmp_path):
    out = tmp_path / "run"
    with _start(out, settings={"lr": 0.1}) as folder:
        assert not folder.resuming and folder.has_record()
    assert json.loads((out / "config.json").read_text()) == {"lr": 0.1}
    with _start(out, resume=True, settings={"changed": {"lr": [0.1, 0.01]}}) as folder:
        assert folder.resuming and folder.recorded(["lr", "other"]) == {"lr": 0.1}
    assert json.loads((out / "resume_3.json").read_text()) == {"changed": {"lr": [0.1, 0.01]}}
    assert RunFolder(str(out), "test run").read() == {"lr": 0.1}


def test_a_start_onto_a_run_is_refused_and_auto_resumes_only_what_is_there(tmp_path):
    out = tmp_path / "run"
    _start(out, settings={"lr": 0.1}).close()
    with pytest.raises(UserError, match=r"already holds a run \(config.json\); pass --resume"):
        _start(out)
    assert RunFolder(str(out), "x", state=("config.json",)).decide("auto") is True
    assert RunFolder(str(tmp_path / "empty"), "x").decide("auto") is False
    with pytest.raises(UserError, match="no run to resume here"):
        with RunFolder(str(tmp_path / "empty"), "x") as folder:
            folder.decide(True)
            folder.open()
    assert not (tmp_path / "empty").exists()  # the refused resume made the folder, and took it away again


def test_a_refused_start_leaves_no_folder_and_no_lock(tmp_path):
    deep = tmp_path / "a" / "b" / "run"
    with pytest.raises(UserError, match="bad setting"):
        with RunFolder(str(deep), "test run") as folder:
            folder.decide(None)
            folder.open()
            assert (deep / ".lock").exists()
            raise UserError("bad setting")  # what a start finds wrong after --out was made
    assert os.listdir(tmp_path) == []
    given = tmp_path / "given"
    given.mkdir()
    (given / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        with RunFolder(str(given), "test run") as folder:
            folder.open()
            raise UserError("bad setting")
    assert sorted(os.listdir(given)) == ["notes.txt"]  # the user's folder stays, without our lock
    with RunFolder(str(given), "test run") as folder:  # and the next start simply works
        folder.open()
        folder.write({"ok": 1})


def test_a_failure_after_the_record_keeps_the_folder_for_resume(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunFolder(str(out), "test run") as folder:
            folder.open()
            folder.write({"lr": 0.1})
            raise RuntimeError("killed mid-run")
    assert (out / "config.json").exists()


def test_a_second_writer_is_refused_in_one_line_and_killed_writers_temporaries_go(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".tmp-config.json.abc").write_text("half")
    with _start(out):
        assert not (out / ".tmp-config.json.abc").exists()
        with pytest.raises(UserError, match="another test run is using this folder"):
            _start(out)
        r = subprocess.run([sys.executable, "-c", "import sys; from tools.run.folder import lock_folder; "
                            "lock_folder(sys.argv[1], 'test run')", str(out)], capture_output=True, text=True,
                           cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode != 0 and "another test run is using this folder" in r.stderr
    lock_folder(str(out), "test run").close()  # free once the holder let go


def test_a_file_output_is_locked_through_its_own_lock_file_which_goes_at_the_end(tmp_path):
    out = tmp_path / "new" / "store.h5"
    with RunFolder.for_file(str(out), "jigsaw prepare") as folder:
        folder.open()
        assert (tmp_path / "new" / "store.h5.lock").exists()
        with pytest.raises(UserError, match=r"store.h5: another jigsaw prepare is writing it"):
            RunFolder.for_file(str(out), "jigsaw prepare").open()
        out.write_bytes(b"data")
        folder.begun()
    assert sorted(os.listdir(tmp_path / "new")) == ["store.h5"]
    with pytest.raises(UserError):
        with RunFolder.for_file(str(tmp_path / "other" / "x.h5"), "jigsaw prepare") as folder:
            folder.open()
            raise UserError("no images")
    assert sorted(os.listdir(tmp_path)) == ["new"]
