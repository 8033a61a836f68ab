"""Atomic checkpoints that load with torch.load(weights_only=True)."""
import os

import torch

from tools.errors import CaffeError


def save_checkpoint(path, payload):
    """torch.save through a temporary file in the same folder, fsync, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise CaffeError(f"{path}: cannot write checkpoint ({e.strerror or e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path):
    """A checkpoint dict; refuses files that need pickled objects (weights_only=True)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CaffeError(f"{path}: no such checkpoint") from None
    except Exception as e:  # unpickling refusals, truncated archives
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaffeError(f"{path}: not a loadable checkpoint ({first[:200]})") from None
