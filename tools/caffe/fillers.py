"""Caffe's weight fillers (constant, uniform, gaussian, positive_unitball, xavier, msra, bilinear)."""
import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..run.errors import CaffeError

_FAN = {0: "fan_in", 1: "fan_out", 2: "average"}


def _fan(shape, norm):
    count = math.prod(shape)
    fan_in = count / shape[0] if shape and shape[0] else count
    fan_out = count / shape[1] if len(shape) > 1 and shape[1] else count
    return {0: fan_in, 1: fan_out, 2: (fan_in + fan_out) / 2}[norm]


@dataclass(frozen=True)
class Filler:
    """A FillerParameter without protobuf, with caffe.proto's defaults: what a model built in code (the CFN) hands
    to `fill`. `variance_norm` 0, 1, 2: FAN_IN, FAN_OUT, AVERAGE."""
    type: str = "constant"
    value: float = 0.0
    min: float = 0.0
    max: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    sparse: int = -1
    variance_norm: int = 0


@torch.no_grad()
def fill(tensor: torch.Tensor, filler: Any, generator: Optional[torch.Generator] = None,
         where: str = "layer") -> torch.Tensor:
    """Fill `tensor` in place as Caffe's filler described by `filler` (a FillerParameter, or a Filler) would."""
    kind = filler.type
    shape = tuple(tensor.shape)
    g = dict(generator=generator)
    numbers = {k: getattr(filler, k) for k in ("value", "min", "max", "mean", "std")}
    bad = [k for k, v in numbers.items() if not math.isfinite(v)]
    if bad:
        raise CaffeError(f"{where}: {kind} filler {bad[0]} is {numbers[bad[0]]}; expected a finite number")
    if kind == "uniform" and filler.min > filler.max:
        raise CaffeError(f"{where}: uniform filler min {filler.min:g} is above max {filler.max:g}")
    if kind == "gaussian" and filler.std < 0:
        raise CaffeError(f"{where}: gaussian filler std {filler.std:g} is negative")
    if kind in ("xavier", "msra") and tensor.numel() and not _fan(shape, filler.variance_norm) > 0:
        raise CaffeError(f"{where}: {kind} filler needs a blob with inputs and outputs, got shape {shape}")
    if kind == "constant":
        tensor.fill_(filler.value)
    elif kind == "uniform":
        tensor.uniform_(filler.min, filler.max, **g)
    elif kind == "gaussian":
        tensor.normal_(filler.mean, filler.std, **g)
        if filler.sparse >= 0:
            if len(shape) < 1 or shape[0] == 0:
                raise CaffeError(f"{where}: sparse gaussian filler needs a blob with outputs")
            p = filler.sparse / shape[0]
            mask = torch.empty_like(tensor).bernoulli_(p, **g)
            tensor.mul_(mask)
    elif kind == "positive_unitball":
        tensor.uniform_(0, 1, **g)
        rows = tensor.reshape(shape[0], -1) if shape else tensor.reshape(1, -1)
        rows.div_(rows.sum(dim=1, keepdim=True))
    elif kind == "xavier":
        scale = math.sqrt(3.0 / _fan(shape, filler.variance_norm))
        tensor.uniform_(-scale, scale, **g)
    elif kind == "msra":
        tensor.normal_(0.0, math.sqrt(2.0 / _fan(shape, filler.variance_norm)), **g)
    elif kind == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise CaffeError(f"{where}: bilinear filler needs a square 4-D kernel, got {shape}")
        # current BVLC filler.hpp: c = (k - 1) / (2f), in float arithmetic (before 2017: (2f - 1 - f%2) / 2f)
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = torch.tensor((k - 1) / (2.0 * f), dtype=torch.float32)
        ax = 1 - torch.abs(torch.arange(k, dtype=torch.float32) / f - c)
        tensor.copy_((ax[:, None] * ax[None, :]).expand(shape))
    else:
        raise CaffeError(f"{where}: unknown filler type '{kind}' (expected constant, uniform, "
                         "gaussian, positive_unitball, xavier, msra or bilinear)")
    return tensor
