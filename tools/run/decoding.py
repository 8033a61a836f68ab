"""Damaged files said in one line: what each decoding library raises on bytes it cannot decode, named once
(`RAISES`), and `decoding(path, library, expected)`, the guard every reader of a user's file goes through.

The guard converts only those named types, and only when the library raised them: an exception that project
code raised itself (a `raise`, or an operation of ours such as indexing, below the guard) is a bug and keeps
its traceback. MemoryError is never converted: a reader checks sizes (in Python integers) before it
allocates, so running out of memory is a bug too.
"""
import dis
import types
from typing import Callable, Dict, Optional, Tuple, Type

from .errors import UserError

PROJECT_PACKAGES = ("tools", "jigsaw", "transfer", "prototxt")


def _gzip() -> tuple:
    import zlib
    return OSError, EOFError, zlib.error  # gzip.BadGzipFile is an OSError; a cut stream an EOFError


def _pickle() -> tuple:
    import pickle
    import struct
    # the unpickler runs opcodes on whatever the bytes hold: bad opcodes, a broken memo or stack, strings that
    # do not decode, and the allowed constructors (NumPy's) given arguments they refuse
    return (pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, LookupError, OverflowError, struct.error)  # struct.error: Python's unpickler, cut short


def _hdf5() -> tuple:
    return OSError, RuntimeError, KeyError, ValueError, TypeError  # h5py's errors all derive from these


def _numpy() -> tuple:
    import tokenize
    # np.load's header parser (tokenize, then ast.literal_eval), np.frombuffer / fromfile / reshape
    return ValueError, SyntaxError, tokenize.TokenError, EOFError, OSError, TypeError


def _pil() -> tuple:
    import struct
    from PIL import Image
    return (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError,
            ZeroDivisionError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def _protobuf() -> tuple:
    from google.protobuf.message import DecodeError
    return DecodeError, ValueError, RuntimeWarning


def _torch() -> tuple:
    import pickle
    # torch.load: the zip reader (RuntimeError), the weights-only unpickler (UnpicklingError) and what the
    # tensors rebuilt from a damaged record refuse
    return (RuntimeError, OSError, pickle.UnpicklingError, EOFError, UnicodeDecodeError, ValueError, TypeError,
            KeyError, IndexError, AttributeError, OverflowError)


def _zip() -> tuple:
    import zipfile
    return zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError


def _text() -> tuple:
    return OSError, UnicodeDecodeError, ValueError  # ValueError: int() / float() of a field that is not one


def _json() -> tuple:
    return ValueError, RecursionError  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors


def _yaml() -> tuple:
    import yaml
    return yaml.YAMLError, RecursionError, ValueError


RAISES: Dict[str, Callable[[], tuple]] = {
    "file": lambda: (OSError,), "gzip": _gzip, "pickle": _pickle, "hdf5": _hdf5, "numpy": _numpy, "pil": _pil,
    "protobuf": _protobuf, "torch": _torch, "zip": _zip, "text": _text, "json": _json, "yaml": _yaml,
}

# the instructions at which a frame of ours hands control to a library (a call, an iteration, a with)
_HAND_OVER = ("CALL", "PRECALL", "FOR_ITER", "BEFORE_WITH", "SETUP_WITH", "GET_ITER")


def _instruction(tb: types.TracebackType) -> str:
    for ins in dis.get_instructions(tb.tb_frame.f_code):
        if ins.offset == tb.tb_lasti:
            return ins.opname
    return ""


def raised_by_project(tb: Optional[types.TracebackType]) -> bool:
    """Whether an exception was raised by project code: its innermost frame is a module of ours stopped at
    anything but a hand-over to a library (a `raise`, indexing, arithmetic, an attribute of ours)."""
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return False
    module = str(last.tb_frame.f_globals.get("__name__", ""))
    if module.split(".")[0] not in PROJECT_PACKAGES:
        return False
    return not _instruction(last).startswith(_HAND_OVER)


def reason(e: BaseException, limit: int = 160) -> str:
    """'TypeName: first line of the message', at most `limit` characters, on one line."""
    if isinstance(e, RecursionError):  # the parsers recurse per level of nesting
        return "nested deeper than the reader goes"
    text = " ".join(str(e).split())
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


class decoding:
    """`with decoding(path, "pickle", "a CIFAR python pickle", DatasetError): ...` turns what the library
    raises on a damaged file into `error("PATH: not EXPECTED (Type: why)")` (or into `make(e)`, a reader's own
    refusal); a UserError passes as it is, and anything else (a bug, MemoryError, a library's type raised by
    project code) keeps its traceback."""

    def __init__(self, path: str, library: str, expected: str = "", error: Type[UserError] = UserError,
                 make: Optional[Callable[[BaseException], UserError]] = None):
        if library not in RAISES:
            raise KeyError(f"no decoder named {library!r} (known: {', '.join(sorted(RAISES))})")
        self.path, self.library, self.expected, self.error, self.make = path, library, expected, error, make

    def __enter__(self) -> "decoding":
        return self

    def __exit__(self, kind: Optional[type], e: Optional[BaseException], tb) -> bool:
        if e is None or isinstance(e, (UserError, MemoryError)) or not isinstance(e, RAISES[self.library]()):
            return False
        if raised_by_project(tb):
            return False
        if self.make is not None:
            raise self.make(e) from None
        raise self.error(f"{self.path}: not {self.expected} ({reason(e)})") from None


def errors_of(*libraries: str) -> Tuple[type, ...]:
    """The exception types the named libraries raise on damaged input (for a reader that must tell them apart)."""
    return tuple(t for lib in libraries for t in RAISES[lib]())
