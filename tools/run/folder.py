"""A run's output folder through its life: the lock, start or resume (or refuse, in one line), config.json
and a resume_N.json per resume; a refused or failed start leaves nothing behind that blocks the next run."""
import contextlib
import json
import os
from typing import Any, Dict, IO, Iterable, List, Optional

from .atomic import atomic_open, ensure_dir
from .errors import DiskError, UserError
from .runrecord import read_record, wants_resume

RECORD = "config.json"


class RunFolder:
    """`path` holds one run of `what` (e.g. "jigsaw train"); any of the `state` files there means it has
    begun. Use as a context manager around the start: an exception before the run is recorded (or resumed)
    removes the lock and the folder this start made (a resume: the lock it made), so the same command can
    simply be run again."""

    def __init__(self, path: str, what: str, state: Iterable[str] = (RECORD,), lock_name: str = ".lock"):
        self.path, self.what, self.state = path, what, tuple(state)
        self.lock_path = os.path.join(path, lock_name)
        self.refusal = f"{path}: another {what} is using this folder (it holds {self.lock_path})"
        self._file_output = False  # for_file: the folder is the user's, the lock is the output's own
        self.resuming = False
        self._lock = None
        self._made: List[str] = []  # what this start created: removed again if it fails
        self._begun = False

    @classmethod
    def for_file(cls, output: str, what: str) -> "RunFolder":
        """A command whose output is one file (jigsaw prepare's store): locked through `output`.lock, which
        goes again at the end; the folder holding it is not the command's to clean."""
        folder = cls(os.path.dirname(os.path.abspath(output)), what, state=(),
                     lock_name=os.path.basename(output) + ".lock")
        folder.refusal = f"{output}: another {what} is writing it (it holds {folder.lock_path})"
        folder._file_output = True
        return folder

    # --- before the folder is touched -------------------------------------------------------------
    def held(self) -> List[str]:
        """The state files already in the folder."""
        return [n for n in self.state if os.path.exists(os.path.join(self.path, n))]

    def recorded(self, fields: Iterable[str], machine: Iterable[str] = ()) -> Dict[str, Any]:
        """What config.json recorded of `fields` (not the `machine` ones), {} without a record."""
        return read_record(self.path, fields, machine)

    def has_record(self) -> bool:
        return os.path.exists(os.path.join(self.path, RECORD))

    def read(self) -> Dict[str, Any]:
        """The whole record config.json holds (a finished run's, for reports and comparisons)."""
        return read_record(self.path, None)

    def decide(self, resume: Any) -> bool:
        """--resume's value (None, True, 'yes', 'auto') against what the folder holds: True to resume."""
        self.resuming = wants_resume(resume, bool(self.held()))
        return self.resuming

    # --- the start ----------------------------------------------------------------------------------
    def open(self, lock: bool = True) -> "RunFolder":
        """Make and lock the folder, remove what writers killed mid-write left, and refuse a start onto a
        run (or a resume of none). Call decide() first. Only one process of a run (rank 0) locks."""
        if not os.path.isdir(self.path):
            if os.path.lexists(self.path):
                raise UserError(f"--out {self.path}: exists and is not a folder")
            parent = os.path.dirname(os.path.abspath(self.path))
            missing = []
            while not os.path.isdir(parent) and parent != os.path.dirname(parent):
                missing.append(parent)
                parent = os.path.dirname(parent)
            ensure_dir(self.path)
            if lock:  # only the process that locks (rank 0) owns what the start made
                self._made += [self.path] + missing
        if lock:
            existed = os.path.exists(self.lock_path)
            self._lock = hold_lock(self.lock_path, self.refusal)
            if not existed:
                self._made.insert(0, self.lock_path)
            if not self._file_output:
                self.clean(self.path)
        held = self.held()
        if held and not self.resuming:
            raise UserError(f"{self.path} already holds a run ({', '.join(held)}); pass --resume or choose "
                            "another --out")
        if self.resuming and not held:
            raise UserError(f"{os.path.join(self.path, self.state[0])}: no run to resume here")
        return self

    @staticmethod
    def clean(folder: str) -> None:
        """Remove the temporary files of writers killed mid-write (SIGKILL runs no cleanup)."""
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            if name.startswith(".tmp-"):
                os.unlink(os.path.join(folder, name))

    def write(self, settings: Dict[str, Any], resume_index: Optional[int] = None) -> str:
        """config.json at the start; resume_<resume_index>.json beside it at a resume. Marks the run begun."""
        name = RECORD if resume_index is None else f"resume_{resume_index}.json"
        path = os.path.join(self.path, name)
        with atomic_open(path, "w") as f:
            json.dump(settings, f, indent=2)
        self._begun = True
        return path

    def begun(self) -> None:
        """The run is under way (its own files are written): a later failure keeps the folder for --resume."""
        self._begun = True

    # --- the end ------------------------------------------------------------------------------------
    def close(self) -> None:
        if self._lock is not None:
            if self._file_output:  # removed while held: a second writer waiting on it meets a fresh file
                with contextlib.suppress(OSError):
                    os.unlink(self.lock_path)
            self._lock.close()
            self._lock = None

    def abandon(self) -> None:
        """A start that failed before anything of the run was written: unlock and remove what it made."""
        self.close()
        for path in self._made:
            if not os.path.lexists(path):
                continue
            try:
                os.unlink(path) if not os.path.isdir(path) else os.rmdir(path)
            except OSError:
                break  # not empty after all (someone else wrote there): leave it and its parents
        self._made = []

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None and not self._begun:
            self.abandon()
        else:
            self.close()


def lock_folder(folder: str, what: str = "run") -> IO:
    """Hold `folder`'s .lock as a run of `what` does (what a second run meets)."""
    held = RunFolder(folder, what)
    return hold_lock(held.lock_path, held.refusal)


def hold_lock(path: str, refusal: str) -> IO:
    """An exclusive lock on the file `path` for this process's life (it goes with the process, however it
    ends); `refusal` is the one line said when another process holds it."""
    import fcntl
    try:
        handle = open(path, "a")
    except OSError as e:  # a read-only file system, no permission, a full disk: the folder cannot take the run
        raise DiskError(f"{path}: cannot create the lock file ({e.strerror or e}); the output's folder must be "
                        "writable") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserError(refusal) from None
    return handle
