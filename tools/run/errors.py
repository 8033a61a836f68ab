"""User errors: a bad file or argument. The command lines print the one-line message and exit 2;
anything else is a bug and keeps its traceback."""
from typing import Any, Optional


class UserError(ValueError):
    """A user's file, folder or setting is wrong; the message says where and what was expected."""


class CaffeError(UserError):
    """A malformed or unsupported Caffe file, layer or field."""


class DatasetError(UserError):
    """A dataset folder or file is missing or malformed; the message names it."""


class DiskError(UserError):
    """A file or folder could not be written or read for the disk's or the system's reason (full, read-only,
    no permission, missing folder); the message names it."""


def where(path: Any, line: Optional[int] = None, col: Optional[int] = None) -> str:
    loc = str(path) if path else "<text>"
    if line is not None:
        loc += f":{line}"
        if col is not None:
            loc += f":{col}"
    return loc


class ImageRefused(UserError):
    """An image file that is not read (tools.run.images); `reason` says why in a few words."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.reason = reason
