"""Checkpoints written atomically and read back with torch.load(weights_only=True): the one way this
project saves and loads torch files, whatever they hold."""
import os
from typing import Any

from .atomic import atomic_open, ensure_dir
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


def load_checkpoint(path: str, what: str = "a loadable checkpoint") -> Any:
    """What a torch file holds; refuses files that need pickled objects (weights_only=True). A file
    that is missing, truncated or not a torch archive is one line: '{path}: not {what} (why)'."""
    import warnings

    import torch
    user_file(path, what.removeprefix("a ").removeprefix("an "))
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols say nothing to a user
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except Exception as e:  # unpickling refusals, truncated archives, other files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Weights only load failed" in first:
            first = "it holds pickled Python objects, which could run code; only tensors are read"
        raise UserError(f"{path}: not {what} ({first[:200]})") from None
