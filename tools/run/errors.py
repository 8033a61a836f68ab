"""User errors: a bad file or argument. The command lines print the one-line message and exit 2;
anything else is a bug and keeps its traceback."""
import difflib
from typing import Any, Iterable, Optional


# every character str.splitlines() breaks at, shown escaped: a name read from a damaged file may hold one
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


class UserError(ValueError):
    """A user's file, folder or setting is wrong; the message says where and what was expected, on one line:
    a line break it quotes from a file is shown escaped."""

    def __init__(self, *args):
        if args and isinstance(args[0], str):
            args = (args[0].translate(_LINE_BREAKS), *args[1:])
        super().__init__(*args)


class CaffeError(UserError):
    """A malformed or unsupported Caffe file, layer or field."""


class DatasetError(UserError):
    """A dataset folder or file is missing or malformed; the message names it."""


class DiskError(UserError):
    """A file or folder could not be written or read for the disk's or the system's reason (full, read-only,
    no permission, missing folder); the message names it."""


def closest(name: str, known: Iterable[str]) -> Optional[str]:
    """The one of `known` that `name` misspells, or None."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'alexnet'?' when `name` is close to one of `known`, else ''."""
    close = closest(name, known)
    return f"; did you mean {close!r}?" if close else ""


def unknown(what: str, name: str, known: Iterable[str], cls: type = UserError, see: str = "") -> UserError:
    """The error for a name not among `known`: "unknown model 'alexnt'; did you mean 'alexnet'? (known: ...)"."""
    known = sorted(known)
    listing = see or f"known: {', '.join(known)}"
    return cls(f"unknown {what} {name!r}{did_you_mean(name, known)} ({listing})")


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
