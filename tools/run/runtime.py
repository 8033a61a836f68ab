"""Where and how a run computes: the device, the precision policy, and named seed streams (torch is
imported on first use, so the command lines can read these names without it)."""
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_device(name: str = "auto") -> "torch.device":
    """'auto' is CUDA when there is one, else the CPU; asking for CUDA where there is none is the user's
    mistake, said in one line."""
    import torch
    name = name or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is available here (use cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: expected auto, cpu, cuda or cuda:N") from None


def use_bf16(precision: str, device: "torch.device") -> bool:
    """The precision policy: 'auto' is bf16 autocast on CUDA and fp32 elsewhere. On CUDA, fp32 means
    Caffe's arithmetic, so TF32's 10-bit mantissa is switched off with it."""
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r}: expected {', '.join(PRECISIONS)}")
    fast = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if device.type == "cuda":
        import torch
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = fast
    return fast


def autocast(device: "torch.device", enabled: bool) -> "torch.autocast":
    """bf16 autocast where enabled; losses, the LRN and the solvers' arithmetic stay float32."""
    import torch
    return torch.autocast(device.type, torch.bfloat16, enabled=enabled)


def seed_of(seed: int, *parts: int) -> int:
    """A 32-bit seed for the stream named by `parts` under the run's `seed`, independent of every other
    named stream (numpy's SeedSequence): (seed, k) for iteration k, (seed, 7) for calibration, ..."""
    import numpy as np
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0])


def stream(seed: int, *parts: int) -> "torch.Generator":
    """A CPU generator on the named stream seed_of(seed, *parts)."""
    import torch
    return torch.Generator().manual_seed(seed_of(seed, *parts))


def numpy_rng(seed: int, *parts: int) -> "np.random.Generator":
    """numpy's generator on the stream (seed, *parts): SeedSequence mixes the parts, so (seed, 7) and
    (seed, 11, epoch) are independent streams; numpy_rng(seed) is numpy's default_rng(seed)."""
    import numpy as np
    return np.random.default_rng([seed, *parts])


def generator(seed: int, device: Any = None) -> "torch.Generator":
    """A torch generator seeded with `seed` itself (a module's initial weights, a fixed input)."""
    import torch
    return torch.Generator(**({"device": device} if device is not None else {})).manual_seed(seed)


def seed_global(seed: int) -> None:
    """torch's global stream (what dropout and unseeded layers draw from) at `seed`."""
    import torch
    torch.manual_seed(seed)


def seed_epoch(seed: int, phase: int, epoch: int, shuffle: "torch.Generator") -> None:
    """Fine-tuning's per-epoch streams: the loader's shuffle (its generator, `shuffle`) and the global
    stream (dropout, augmentation), each a function of (seed, phase, epoch) alone, so a resumed run
    replays the epochs it had not finished exactly."""
    base = seed * 1_000_003 + phase * 10_007 + epoch
    shuffle.manual_seed(base)
    seed_global(base + 1)


def die_with_parent() -> None:
    """In a worker process: be killed when the parent dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG),
    so no orphan keeps files or HDF5 locks open. Elsewhere a no-op."""
    import os
    import signal
    import sys
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call
        os._exit(1)


CPU_WHEELS = "https://download.pytorch.org/whl/cpu"


def import_torchvision() -> Any:
    """torchvision, or one line saying why it does not load beside this torch: a build of torchvision made for
    another torch (a CUDA torchvision beside a CPU torch fails with 'operator torchvision::nms does not exist')."""
    try:
        import torchvision
    except ImportError:
        raise UserError("this needs torchvision: pip install torchvision (the release made for your torch)") from None
    except RuntimeError as e:  # its compiled operators do not register with this torch
        import torch
        from importlib import metadata
        try:
            have = metadata.version("torchvision")
        except metadata.PackageNotFoundError:
            have = "?"
        raise UserError(f"torchvision {have} does not load beside torch {torch.__version__} "
                        f"({str(e).splitlines()[0][:100]}): it was built for another torch (a CUDA torchvision "
                        f"beside a CPU torch does this); install the two together, e.g. pip install --force-reinstall "
                        f"torch=={torch.__version__.split('+')[0]} torchvision --index-url {CPU_WHEELS} (the CPU "
                        "builds), or make clean && make install") from None
    return torchvision
