"""Element-wise layers: ReLU, PReLU, ELU, Sigmoid, TanH, AbsVal, Power, Exp, Log, BNLL, Threshold, Clip, Swish, Dropout."""
import math

from typing import Any

import torch
import torch.nn.functional as F

from .. import caffe_pb2 as pb
from .base import BuildContext, Layer, Shapes, Tops, no_backward as _no_backward, register


class Neuron(Layer):
    """One bottom, one top, same shape."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [shapes[0]]

    def forward(self, x: torch.Tensor) -> Tops:
        return (self.f(x),)


@register("ReLU")
class ReLU(Neuron):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.slope = lp.relu_param.negative_slope

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if self.slope == 0 else F.leaky_relu(x, self.slope)


@register("PReLU")
class PReLU(Neuron):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        p = lp.prelu_param
        if len(shapes[0]) < 2 and not p.channel_shared:
            self.fail("PReLU needs at least 2 axes (N, C, ...) unless channel_shared")
        filler = p.filler if p.HasField("filler") else pb.FillerParameter(type="constant", value=0.25)
        # channel_shared: one slope in a 0-axis blob, as Caffe's PReLU makes it (prelu_layer.cpp)
        ctx.param(self, "weight", 0, () if p.channel_shared else (shapes[0][1],), filler)
        self.blob_names = ("weight",)
        self.shared = p.channel_shared

    def f(self, x: torch.Tensor) -> torch.Tensor:
        a = self.weight if self.shared else self.weight.reshape((1, -1) + (1,) * (x.dim() - 2))
        # the slope side includes 0: Caffe's d/dx is (x > 0) + slope * (x <= 0) (prelu_layer.cpp)
        return torch.where(x > 0, x, a * x)


@register("ELU")
class ELU(Neuron):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.alpha = lp.elu_param.alpha

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0, x, self.alpha * torch.expm1(x))


@register("Sigmoid")
class Sigmoid(Neuron):
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


@register("TanH")
class TanH(Neuron):
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x)


@register("AbsVal")
class AbsVal(Neuron):
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.abs(x)


class _BNLL(torch.autograd.Function):
    """log(1 + e^x), split at 0 as Caffe does to stay finite; its gradient e/(e + 1) with e = exp(min(x, 50))
    (bnll_layer.cpp's kBNLL_THRESHOLD), finite for every x."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x > 0, x + torch.log1p(torch.exp(-x.abs())), torch.log1p(torch.exp(-x.abs())))

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        x, = ctx.saved_tensors
        e = torch.exp(torch.clamp_max(x, 50.0))
        return g * e / (e + 1)


@register("BNLL")
class BNLL(Neuron):
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return _BNLL.apply(x)


@register("Power")
class Power(Neuron):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        p = lp.power_param
        self.power, self.scale, self.shift = p.power, p.scale, p.shift

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.pow(self.shift + self.scale * x, self.power)


@register("Exp")
class Exp(Neuron):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        p = lp.exp_param
        if p.base != -1 and p.base <= 0:
            self.fail(f"exp_param.base must be -1 (e) or positive, got {p.base}")
        log_base = 1.0 if p.base == -1 else math.log(p.base)
        self.inner = log_base * p.scale
        self.outer = 1.0 if p.shift == 0 else math.exp(log_base * p.shift)

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer * torch.exp(self.inner * x)


@register("Log")
class Log(Neuron):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        p = lp.log_param
        if p.base != -1 and p.base <= 0:
            self.fail(f"log_param.base must be -1 (e) or positive, got {p.base}")
        self.base_scale = 1.0 if p.base == -1 else 1.0 / math.log(p.base)
        self.scale, self.shift = p.scale, p.shift

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.shift + self.scale * x) * self.base_scale


@register("Threshold")
class Threshold(Neuron):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.threshold = lp.threshold_param.threshold

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return _no_backward(self, (x > self.threshold).to(x.dtype), x)


@register("Clip")
class Clip(Neuron):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.lo, self.hi = lp.clip_param.min, lp.clip_param.max

    def f(self, x: torch.Tensor) -> torch.Tensor:
        # the gradient passes at min and max too (clip_layer.cpp: x >= min && x <= max)
        return torch.where((x >= self.lo) & (x <= self.hi), x, torch.clamp(x, self.lo, self.hi).detach())


@register("Swish")
class Swish(Neuron):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.beta = lp.swish_param.beta

    def f(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


@register("Dropout")
class Dropout(Neuron):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.ratio = lp.dropout_param.dropout_ratio
        if not 0 <= self.ratio < 1:
            self.fail(f"dropout_ratio must be in [0, 1), got {self.ratio}")

    def f(self, x: torch.Tensor) -> torch.Tensor:
        # Caffe scales kept units by 1/(1-ratio) in training and is the identity in testing.
        return F.dropout(x, self.ratio, self.training)
