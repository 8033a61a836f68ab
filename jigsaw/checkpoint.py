"""Atomic checkpoints that load with torch.load(weights_only=True)."""
import os

import torch

from tools.atomic import atomic_open, ensure_dir
from tools.errors import CaffeError


def save_checkpoint(path, payload):
    """torch.save through a temporary file in the same folder, fsync, then rename."""
    ensure_dir(os.path.dirname(os.path.abspath(path)))
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)


def load_checkpoint(path):
    """A checkpoint dict; refuses files that need pickled objects (weights_only=True)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CaffeError(f"{path}: no such checkpoint") from None
    except Exception as e:  # unpickling refusals, truncated archives
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaffeError(f"{path}: not a loadable checkpoint ({first[:200]})") from None
