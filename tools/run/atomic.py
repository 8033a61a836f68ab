"""Atomic file output: write to a temporary file in the same folder, fsync, then rename."""
import contextlib
import os
import tempfile
from typing import IO, Iterator, List

from .errors import CaffeError, DiskError
from .paths import user_file


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
    """Yield a file object; `path` appears only if the block finishes. Missing parent folders are made (every
    `-o` may name a new folder). On any failure the temporary file is removed, and OS errors (read-only
    folder, disk full) become one-line DiskErrors."""
    directory = ensure_dir(os.path.dirname(os.path.abspath(path)))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + os.path.basename(path), dir=directory)
    except OSError as e:
        raise DiskError(f"{path}: cannot write ({e.strerror or e})") from None
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise DiskError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_files(*paths: str) -> Iterator[List[str]]:
    """Yield temporary paths, one per path (beside it); they replace `paths` only when the whole block
    finishes, so files that belong together (a .prototxt and its .caffemodel) change as a unit. Missing parent
    folders are made."""
    for p in paths:
        ensure_dir(os.path.dirname(os.path.abspath(p)))
    temps = [os.path.join(os.path.dirname(os.path.abspath(p)), f".tmp-{os.getpid()}-{os.path.basename(p)}")
             for p in paths]
    try:
        yield temps
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    except OSError as e:
        raise DiskError(f"{paths[0]}: cannot write ({e.strerror or e})") from None
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def ensure_dir(path: str) -> str:
    """Create folder `path` (and parents); a failure is one DiskError line, not a traceback."""
    try:
        os.makedirs(path, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file where the path needs a folder: say which one
        blocker = path
        while os.path.dirname(blocker) != blocker and not (os.path.lexists(blocker) and not os.path.isdir(blocker)):
            blocker = os.path.dirname(blocker)
        raise DiskError(f"{path}: cannot create the output folder ({blocker} is a file, not a folder)") from None
    except OSError as e:
        raise DiskError(f"{path}: cannot create the output folder ({e.strerror or e})") from None
    return path


def read_bounded(path: str, limit: int, what: str = "file") -> bytes:
    """The bytes of `path`; a file over `limit` bytes, or one that cannot be read, is one line."""
    user_file(path, what)
    try:
        size = os.path.getsize(path)
        if size > limit:
            raise CaffeError(f"{path}: {what} larger than {limit >> 20} MB")  # the file, not the disk
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DiskError(f"{path}: cannot read ({e.strerror or e})") from None
