"""Paths a user gives or lists: every file the project reads is a regular file (`user_file`: a FIFO or a
device would block the reader forever), and paths taken from list files stay inside their root."""
import os
import stat

from .errors import UserError


def user_file(path: str, what: str = "file") -> str:
    """`path`, when it is a regular file a reader can open without blocking; else one line: missing, a
    folder, or a FIFO / socket / device. The one check every reader of a user's file makes first."""
    if "\0" in str(path):
        raise UserError(f"{str(path)!r}: a path with a NUL byte; expected a {what}")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (expected a {what})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{path}: is a folder; expected a {what}")
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: not a regular file (a FIFO, socket or device would block the reader); "
                        f"expected a {what}")
    return path


def inside(root: str, rel: str, where: str) -> str:
    """root/rel, or one line naming `where` when rel is absolute or climbs out of root (after symlinks)."""
    if "\0" in rel:
        raise UserError(f"{where}: an entry holds a NUL byte ({rel!r})")
    if os.path.isabs(rel):
        raise UserError(f"{where}: '{rel}' is an absolute path; entries must be relative to {root}")
    path = os.path.join(root, rel)
    base = os.path.realpath(root)
    if os.path.commonpath([base, os.path.realpath(path)]) != base:
        raise UserError(f"{where}: '{rel}' leads outside {root}")
    return path


def is_regular(path: str) -> bool:
    """A regular file (following symlinks): not a FIFO, socket, device or folder."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
