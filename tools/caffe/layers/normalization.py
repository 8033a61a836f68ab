"""BatchNorm (with Caffe's scale-factor blob), Scale and Bias."""
from typing import Any, Tuple

import torch

from .. import caffe_pb2 as pb
from .base import BuildContext, Layer, Shapes, Tops, broadcast_shape, canonical_axis, register


@register("BatchNorm")
class BatchNorm(Layer):
    """Caffe's BatchNorm: no affine part; blobs are (mean, variance) sums and their scale factor."""
    blob_names = ("mean", "variance", "scale_factor")

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.batch_norm_param
        self.channels = 1 if len(shapes[0]) == 1 else shapes[0][1]
        self.eps, self.maf = p.eps, p.moving_average_fraction
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else None
        for name, shape in (("mean", (self.channels,)), ("variance", (self.channels,)),
                            ("scale_factor", (1,))):
            ctx.buffer(self, name, shape)

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [shapes[0]]

    def _view(self, t, x):
        return t.reshape((1, -1) + (1,) * (x.dim() - 2)) if x.dim() > 1 else t

    def forward(self, x: torch.Tensor) -> Tops:
        use_global = (not self.training) if self.use_global_stats is None else self.use_global_stats
        if use_global:
            s = self.scale_factor[0]
            factor = torch.where(s == 0, torch.zeros_like(s), 1 / s)
            mean, var = self.mean * factor, self.variance * factor
        else:
            dims = [d for d in range(x.dim()) if d != 1]
            mean = x.mean(dim=dims)
            var = ((x - self._view(mean, x)) ** 2).mean(dim=dims)
            # Caffe's running sums, with its m/(m-1) variance correction, whenever the batch's own
            # statistics are used (batch_norm_layer.cpp), whatever the phase
            with torch.no_grad():
                m = x.numel() // self.channels
                self.scale_factor.mul_(self.maf).add_(1)
                self.mean.mul_(self.maf).add_(mean)
                self.variance.mul_(self.maf).add_(var * (m / max(m - 1, 1)))
        return ((x - self._view(mean, x)) / torch.sqrt(self._view(var, x) + self.eps),)


class _Affine(Layer):
    """Shared logic of Scale and Bias: a parameter (or second bottom) broadcast from `axis`."""

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [shapes[0]]

    def setup(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext, p: Any, name: str,
              default_value: float, filler: "pb.FillerParameter") -> None:
        self.check_bottoms(shapes, 1, 2)
        x = shapes[0]
        if len(shapes) == 2:
            other = shapes[1]
            self.axis = 0 if len(other) == 0 else canonical_axis(p.axis, len(x), self)
            if tuple(x[self.axis:self.axis + len(other)]) != tuple(other):
                self.fail(f"second bottom {tuple(other)} does not match input {tuple(x)} "
                          f"from axis {self.axis}")
            return
        self.axis = canonical_axis(p.axis, len(x), self)
        n = len(x) - self.axis if p.num_axes == -1 else p.num_axes
        if p.num_axes < -1 or self.axis + n > len(x):
            self.fail(f"num_axes {p.num_axes} is out of range from axis {self.axis} of {tuple(x)}")
        shape = tuple(x[self.axis:self.axis + n])
        if not p.HasField("filler"):  # a filler given, even empty ({}: constant 0), is used as given
            filler = pb.FillerParameter(type="constant", value=default_value)
        ctx.param(self, name, 0, shape, filler)
        self.blob_names = (name,)

    def param_view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.reshape(broadcast_shape(t.shape, self.axis, x.dim()))


@register("Scale")
class Scale(_Affine):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        p = lp.scale_param
        self.setup(lp, shapes, ctx, p, "weight", 1.0, p.filler)
        self.bias = None
        if p.bias_term:
            x = shapes[0]
            n = len(shapes[1]) if len(shapes) == 2 else (
                len(x) - self.axis if p.num_axes == -1 else p.num_axes)
            ctx.param(self, "bias", len(self.blob_names), tuple(x[self.axis:self.axis + n]),
                      p.bias_filler)
            self.blob_names = self.blob_names + ("bias",)

    def forward(self, x: torch.Tensor, *scale: torch.Tensor) -> Tops:
        s = scale[0] if scale else self.weight
        out = x * self.param_view(s, x)
        if self.bias is not None:
            out = out + self.param_view(self.bias, x)
        return (out,)


@register("Bias")
class Bias(_Affine):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        p = lp.bias_param
        self.setup(lp, shapes, ctx, p, "bias", 0.0, p.filler)

    def forward(self, x: torch.Tensor, *bias: torch.Tensor) -> Tops:
        b = bias[0] if bias else self.bias
        return (x + self.param_view(b, x),)


class _MVNFunction(torch.autograd.Function):
    """Caffe's MVN on (groups, dim) rows: y = (x - mean) / (std + eps) with its backward
    dx = (dy - (sum(dy) + y * sum(y * dy)) / dim) / (std + eps) (mvn_layer.cpp), exact at eps = 0."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, normalize_variance: bool, eps: float) -> torch.Tensor:
        centred = x - x.mean(1, keepdim=True)
        if not normalize_variance:
            ctx.normalize_variance = False
            return centred
        denom = (centred * centred).mean(1, keepdim=True).sqrt() + eps
        y = centred / denom
        ctx.normalize_variance = True
        ctx.save_for_backward(y, denom)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> Tuple[torch.Tensor, None, None]:
        dim = dy.shape[1]
        if not ctx.normalize_variance:
            return dy - dy.mean(1, keepdim=True), None, None
        y, denom = ctx.saved_tensors
        inner = dy.sum(1, keepdim=True) + y * (y * dy).sum(1, keepdim=True)
        return (dy - inner / dim) / denom, None, None


@register("MVN")
class MVN(Layer):
    """Mean-variance normalisation per item (across_channels) or per item and channel."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.mvn_param
        self.normalize_variance, self.across, self.eps = p.normalize_variance, p.across_channels, p.eps
        if len(shapes[0]) > 4 or len(shapes[0]) < 1:
            self.fail(f"needs a blob of 1 to 4 axes (Caffe's num/channels), got {tuple(shapes[0])}")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [shapes[0]]

    def forward(self, x: torch.Tensor) -> Tops:
        groups = x.shape[0] if self.across or x.dim() < 2 else x.shape[0] * x.shape[1]
        y = _MVNFunction.apply(x.reshape(groups, -1), self.normalize_variance, self.eps)
        return (y.reshape(x.shape),)
