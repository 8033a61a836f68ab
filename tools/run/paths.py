"""Paths taken from files a user gives (list files, dataset tables): they stay inside their root, and only
regular files are read as images (a FIFO would block the reader forever)."""
import os
import stat

from .errors import UserError


def inside(root: str, rel: str, where: str) -> str:
    """root/rel, or one line naming `where` when rel is absolute or climbs out of root (after symlinks)."""
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
