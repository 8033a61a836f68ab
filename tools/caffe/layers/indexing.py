"""Layers that pick, repeat or reduce values: ArgMax, Embed, BatchReindex, Tile, Parameter, Reduction, Im2col."""
import math

import torch
import torch.nn.functional as F

from .. import caffe_pb2 as pb
from .base import (BuildContext, Layer, Shapes, Tops, canonical_axis, no_backward, register,
                   spatial_geometry)



@register("ArgMax")
class ArgMax(Layer):
    """Top-k indices (or values) per sample, or along `axis`; ties go to the larger index, as Caffe's
    partial_sort of (value, index) pairs. Caffe has no backward for it."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.argmax_param
        self.top_k, self.out_max_val = p.top_k, p.out_max_val
        x = shapes[0]
        self.axis = canonical_axis(p.axis, len(x), self) if p.HasField("axis") else None
        size = x[self.axis] if self.axis is not None else math.prod(x[1:])
        if self.top_k < 1 or self.top_k > size:
            self.fail(f"top_k {self.top_k} must be between 1 and the {size} values it ranks")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        x = list(shapes[0])
        if self.axis is not None:
            x[self.axis] = self.top_k
            return [tuple(x)]
        out = [1] * max(3, len(x))
        out[0], out[2] = x[0], self.top_k
        out[1] = 2 if self.out_max_val else 1
        return [tuple(out)]

    def _top(self, x, dim):
        n = x.shape[dim]
        values, index = x.flip(dim).sort(dim=dim, descending=True, stable=True)  # ties: larger index first
        keep = torch.arange(self.top_k, device=x.device)
        return values.index_select(dim, keep), (n - 1 - index).index_select(dim, keep).to(x.dtype)

    def forward(self, x: torch.Tensor) -> Tops:
        shape = self.out_shapes([x.shape])[0]
        if self.axis is not None:
            values, index = self._top(x, self.axis)
            out = values if self.out_max_val else index
        else:
            values, index = self._top(x.reshape(x.shape[0], -1), 1)
            out = torch.cat([index, values], 1) if self.out_max_val else index
        return (no_backward(self, out.reshape(shape), x),)


@register("Embed")
class Embed(Layer):
    """Rows of a (input_dim, num_output) table picked by integer-valued bottoms (+ bias); Caffe cannot
    backpropagate to the indices, only to the table."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.embed_param
        if not p.num_output or not p.input_dim:
            self.fail("embed_param needs a positive num_output and input_dim")
        self.num_output, self.input_dim = p.num_output, p.input_dim
        ctx.param(self, "weight", 0, (p.input_dim, p.num_output), p.weight_filler)
        self.bias, self.blob_names = None, ("weight",)
        if p.bias_term:
            ctx.param(self, "bias", 1, (p.num_output,), p.bias_filler)
            self.blob_names = ("weight", "bias")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [tuple(shapes[0]) + (self.num_output,)]

    def forward(self, x: torch.Tensor) -> Tops:
        index = x.detach().to(torch.long)
        if bool((index.to(x.dtype) != x.detach()).any()) or bool(((index < 0) | (index >= self.input_dim)).any()):
            self.fail(f"indices must be whole numbers in [0, {self.input_dim})")
        out = F.embedding(index, self.weight)
        return (out + self.bias if self.bias is not None else out,)


@register("BatchReindex")
class BatchReindex(Layer):
    """bottom[0] rows in the order of the indices in bottom[1]; gradients add up per source row."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        if len(shapes[1]) != 1:
            self.fail(f"the indices must be a 1-D blob, got shape {tuple(shapes[1])}")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [(shapes[1][0],) + tuple(shapes[0][1:])]

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> Tops:
        idx = index.detach().to(torch.long)
        if bool(((idx < 0) | (idx >= x.shape[0])).any()):
            self.fail(f"indices must be in [0, {x.shape[0]})")
        return (x.index_select(0, idx),)


@register("Tile")
class Tile(Layer):
    """`tiles` copies of everything from `axis` on, one after another along `axis`."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.tile_param
        self.axis = canonical_axis(p.axis, len(shapes[0]), self)
        if p.tiles < 1:
            self.fail(f"tiles must be positive, got {p.tiles}")
        self.tiles = p.tiles

    def out_shapes(self, shapes: Shapes) -> Shapes:
        x = list(shapes[0])
        x[self.axis] *= self.tiles
        return [tuple(x)]

    def forward(self, x: torch.Tensor) -> Tops:
        reps = [1] * x.dim()
        reps[self.axis] = self.tiles
        return (x.repeat(*reps),)


@register("Parameter")
class Parameter(Layer):
    """A learnable blob of `shape` as the top (Caffe allocates it zeroed)."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        if shapes:
            self.fail("takes no bottom blobs")
        self.shape = tuple(lp.parameter_param.shape.dim)
        ctx.param(self, "weight", 0, self.shape, pb.FillerParameter(type="constant", value=0))
        self.blob_names = ("weight",)

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [self.shape]

    def forward(self) -> Tops:
        return (self.weight,)


@register("Reduction")
class Reduction(Layer):
    """SUM, ASUM, SUMSQ or MEAN over every axis from `axis` on, times `coeff`."""
    OPS = {pb.ReductionParameter.SUM: "sum", pb.ReductionParameter.ASUM: "asum",
           pb.ReductionParameter.SUMSQ: "sumsq", pb.ReductionParameter.MEAN: "mean"}

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.reduction_param
        self.axis = canonical_axis(p.axis, len(shapes[0]), self)
        self.op, self.coeff = self.OPS[p.operation], p.coeff

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [tuple(shapes[0][:self.axis])]

    def forward(self, x: torch.Tensor) -> Tops:
        flat = x.reshape(*x.shape[:self.axis], -1)
        if self.op == "asum":
            flat = flat.abs()
        elif self.op == "sumsq":
            flat = flat * flat
        out = flat.mean(-1) if self.op == "mean" else flat.sum(-1)
        return (out * self.coeff if self.coeff != 1 else out,)


@register("Im2col")
class Im2col(Layer):
    """The columns a convolution multiplies: (N, C*kh*kw, out_h, out_w), channel-major as Caffe's im2col."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        if len(shapes[0]) != 4:
            self.fail(f"Im2col needs a 4-D input (N, C, H, W), got shape {tuple(shapes[0])}")
        self.kernel, self.stride, self.pad, self.dilation = spatial_geometry(lp.convolution_param, 2, self,
                                                                              "im2col")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        n, c, h, w = shapes[0]
        size = [(s + 2 * p - (d * (k - 1) + 1)) // st + 1 for s, p, d, k, st in
                zip((h, w), self.pad, self.dilation, self.kernel, self.stride)]
        if min(size) < 1:
            self.fail(f"kernel {self.kernel} does not fit the {h}x{w} input")
        return [(n, c * self.kernel[0] * self.kernel[1], *size)]

    def forward(self, x: torch.Tensor) -> Tops:
        shape = self.out_shapes([x.shape])[0]
        cols = F.unfold(x, self.kernel, self.dilation, self.pad, self.stride)
        return (cols.reshape(shape),)


@register("Filter")
class Filter(Layer):
    """The items (along axis 0) of each bottom whose selector (the last bottom) is non-zero. The tops'
    first axis depends on the data: shapes known before a forward pass give its upper bound, N.
    Caffe cannot backpropagate to the selector."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2)
        if len(lp.top) != len(shapes) - 1:
            self.fail(f"{len(shapes) - 1} bottoms to filter need as many tops, got {len(lp.top)}")
        n = shapes[-1][0] if shapes[-1] else 1
        if math.prod(shapes[-1]) != n or any(not s or s[0] != n for s in shapes[:-1]):
            self.fail(f"the selector {tuple(shapes[-1])} needs one value per item of every bottom (N = {n})")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [tuple(s) for s in shapes[:-1]]

    def forward(self, *xs: torch.Tensor) -> Tops:
        keep = torch.nonzero(xs[-1].detach().reshape(-1) != 0).reshape(-1)
        return tuple(x.index_select(0, keep) for x in xs[:-1])
