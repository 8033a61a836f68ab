"""Checkpoints written atomically and read back with torch.load(weights_only=True): the one way this
project saves and loads torch files, whatever they hold."""
import os
from typing import Any

from .atomic import atomic_open, ensure_dir
from .decoding import decoding
from .errors import UserError
from .paths import user_file


def save_checkpoint(path: str, payload: Any) -> None:
    """torch.save through a temporary file in the same folder, fsync, then rename."""
    import torch  # here, not above: the command lines import this module before they know they need torch
    ensure_dir(os.path.dirname(os.path.abspath(path)))
    with atomic_open(path, "wb") as f:
        try:
            torch.save(payload, f)
        except RuntimeError:  # torch reports a full disk or a size limit as "unexpected pos ..."
            raise UserError(f"{path}: cannot write (the write stopped short: is the disk full, or a file "
                            "size limit reached?)") from None


DEFLATE_RATIO = 1032  # the most deflate expands; torch writes its records uncompressed (stored)


def _check_archive(path: str, size: int) -> None:
    """Every record of a torch zip archive inside the file and no larger than its stored bytes allow, checked
    from Python's reading of the central directory before torch's reader sizes a buffer by it."""
    import zipfile
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            limit = info.compress_size * (DEFLATE_RATIO if info.compress_type else 1)
            if info.header_offset + info.compress_size > size or info.file_size > limit:
                raise UserError(f"{path}: not a torch checkpoint (its record {info.filename[:60]!r} declares "
                                f"{info.file_size} bytes at offset {info.header_offset} of a {size}-byte file)")


def load_checkpoint(path: str, what: str = "a loadable checkpoint") -> Any:
    """What a torch file holds; refuses files that need pickled objects (weights_only=True). A file
    that is missing, truncated or not a torch archive is one line: '{path}: not {what} (why)'."""
    import warnings
    import zipfile

    import torch
    user_file(path, what.removeprefix("a ").removeprefix("an "))
    size = os.path.getsize(path)
    with decoding(path, "zip", what):
        if zipfile.is_zipfile(path):  # the format torch writes; its legacy format (a bare pickle) has no directory
            _check_archive(path, size)
    try:
        with decoding(path, "torch", what), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols say nothing to a user
            return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:  # torch's legacy (bare pickle) format allocates the lengths its records declare
        raise UserError(f"{path}: not {what} (a damaged record declares more bytes than memory allows; the file has "
                        f"{size})") from None
    except UserError as e:
        if "Weights only load failed" not in str(e):
            raise
        raise UserError(f"{path}: not {what} (it holds pickled Python objects, which could run code; only "
                        "tensors are read)") from None
