"""Shape and arithmetic layers: InnerProduct, Softmax, Concat, Slice, Split, Flatten, Reshape, Eltwise, Crop, Silence."""
import math

import torch
import torch.nn.functional as F

from .. import caffe_pb2 as pb
from .base import MAX_BLOB_ELEMENTS, BuildContext, Layer, Shapes, Tops, canonical_axis, register


def _legacy_axis(layer, p, legacy, ndim):
    """Caffe: the deprecated non-negative `concat_dim`/`slice_dim` wins when set; not both with axis."""
    if p.HasField(legacy):
        if p.HasField("axis"):
            layer.fail(f"give either axis or {legacy}, not both")
        if getattr(p, legacy) >= ndim:
            layer.fail(f"{legacy} {getattr(p, legacy)} is out of range for a {ndim}-D blob")
        return getattr(p, legacy)
    return canonical_axis(p.axis, ndim, layer)


@register("InnerProduct")
class InnerProduct(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.inner_product_param
        if not p.num_output:
            self.fail("inner_product_param.num_output must be set and positive")
        self.axis = canonical_axis(p.axis, len(shapes[0]), self)
        k = math.prod(shapes[0][self.axis:])
        self.transpose = p.transpose
        ctx.param(self, "weight", 0, (k, p.num_output) if p.transpose else (p.num_output, k),
                  p.weight_filler)
        self.bias = None
        self.blob_names = ("weight",)
        if p.bias_term:
            ctx.param(self, "bias", 1, (p.num_output,), p.bias_filler)
            self.blob_names = ("weight", "bias")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [tuple(shapes[0][:self.axis]) + (self.weight.shape[0 if not self.transpose else 1],)]

    def forward(self, x: torch.Tensor) -> Tops:
        flat = x.reshape(tuple(x.shape[:self.axis]) + (-1,))
        w = self.weight.t() if self.transpose else self.weight
        return (F.linear(flat, w, self.bias),)


@register("Softmax")
class Softmax(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        self.axis = canonical_axis(lp.softmax_param.axis, len(shapes[0]), self)

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [shapes[0]]

    def forward(self, x: torch.Tensor) -> Tops:
        return (torch.softmax(x, self.axis),)


@register("Concat")
class Concat(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1)
        self.axis = _legacy_axis(self, lp.concat_param, "concat_dim", len(shapes[0]))
        for s in shapes[1:]:
            if len(s) != len(shapes[0]) or any(a != b for i, (a, b) in enumerate(zip(s, shapes[0]))
                                               if i != self.axis):
                self.fail(f"bottom shapes {shapes} differ outside the concat axis {self.axis}")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        out = list(shapes[0])
        out[self.axis] = sum(s[self.axis] for s in shapes)
        return [tuple(out)]

    def forward(self, *xs: torch.Tensor) -> Tops:
        return (xs[0] if len(xs) == 1 else torch.cat(xs, self.axis),)


@register("Slice")
class Slice(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.slice_param
        self.axis = _legacy_axis(self, p, "slice_dim", len(shapes[0]))
        length, n = shapes[0][self.axis], self.n_top
        points = list(p.slice_point)
        if points:
            if len(points) != n - 1:
                self.fail(f"{len(points)} slice_point(s) for {n} tops (need {n - 1})")
            bounds = [0] + points + [length]
            self.sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
            if any(s <= 0 for s in self.sizes):
                self.fail(f"slice_point {points} must increase within 1..{length - 1}")
        else:
            if n == 0 or length % n:
                self.fail(f"axis {self.axis} of size {length} does not split evenly into {n} tops")
            self.sizes = [length // n] * n

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [tuple(shapes[0][:self.axis]) + (n,) + tuple(shapes[0][self.axis + 1:]) for n in self.sizes]

    def forward(self, x: torch.Tensor) -> Tops:
        return tuple(torch.split(x, self.sizes, self.axis))


@register("Split")
class Split(Layer):
    def out_shapes(self, shapes: Shapes) -> Shapes:
        if len(shapes) != 1:
            self.fail(f"expects 1 bottom blob, got {len(shapes)}")
        return [shapes[0]] * self.n_top

    def forward(self, x: torch.Tensor) -> Tops:
        return (x,) * self.n_top


@register("Silence")
class Silence(Layer):
    def out_shapes(self, shapes: Shapes) -> Shapes:
        return []

    def forward(self, *xs: torch.Tensor) -> Tops:
        return ()


@register("Flatten")
class Flatten(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        nd = len(shapes[0])
        self.start = canonical_axis(lp.flatten_param.axis, nd, self)
        self.end = canonical_axis(lp.flatten_param.end_axis, nd, self)
        if self.start > self.end:
            self.fail(f"axis {lp.flatten_param.axis} comes after end_axis {lp.flatten_param.end_axis} "
                      f"of a {nd}-D blob")

    def forward(self, x: torch.Tensor) -> Tops:
        return (torch.flatten(x, self.start, self.end),)


@register("Reshape")
class Reshape(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.reshape_param
        nd = len(shapes[0])
        start = p.axis + nd + 1 if p.axis < 0 else p.axis
        if not 0 <= start <= nd:
            self.fail(f"reshape axis {p.axis} is out of range for a {nd}-D blob")
        end = nd if p.num_axes == -1 else start + p.num_axes
        if p.num_axes < -1 or end > nd:
            self.fail(f"num_axes {p.num_axes} is out of range from axis {start} of a {nd}-D blob")
        dims = list(p.shape.dim)
        if sum(d == -1 for d in dims) > 1 or any(d < -1 for d in dims):
            self.fail(f"shape {dims}: at most one -1 and no other negative dims")
        copied = [start + i for i, d in enumerate(dims) if d == 0 and start + i >= nd]
        if copied:
            self.fail(f"shape {dims}: dim 0 copies input axis {copied[0]}, which a {nd}-D blob does not have")
        self.start, self.end, self.dims = start, end, dims
        self.forward(torch.empty(shapes[0], device="meta"))  # validate counts now

    def forward(self, x: torch.Tensor) -> Tops:
        shape = list(x.shape)
        mid = [shape[self.start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        new = shape[:self.start] + mid + shape[self.end:]
        if -1 in new:
            known = math.prod(d for d in new if d != -1)
            total = math.prod(shape)
            if known == 0 or total % known:
                self.fail(f"cannot infer -1 in {new} for a blob of {total} values")
            new[new.index(-1)] = total // known
        if math.prod(new) != math.prod(shape):
            self.fail(f"shape {tuple(new)} holds {math.prod(new)} values, the input {tuple(shape)} "
                      f"holds {math.prod(shape)}")
        return (x.reshape(new),)


@register("Eltwise")
class Eltwise(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2)
        p = lp.eltwise_param
        if any(s != shapes[0] for s in shapes):
            self.fail(f"all bottoms must have the same shape, got {shapes}")
        self.op = {pb.EltwiseParameter.SUM: "sum", pb.EltwiseParameter.PROD: "prod",
                   pb.EltwiseParameter.MAX: "max"}[p.operation]
        self.coeff = list(p.coeff)
        # Caffe refuses coeff only with PROD; MAX takes it and ignores it (eltwise_layer.cpp LayerSetUp)
        if self.coeff and (self.op == "prod" or len(self.coeff) != len(shapes)):
            self.fail("coeff takes one value per bottom, and not with the PROD operation")

    def forward(self, *xs: torch.Tensor) -> Tops:
        if self.op == "sum":
            if not self.coeff:
                out = xs[0]
                for x in xs[1:]:
                    out = out + x
                return (out,)
            out = xs[0] * self.coeff[0]
            for c, x in zip(self.coeff[1:], xs[1:]):
                out = out + c * x
            return (out,)
        if self.op == "max":  # Caffe's mask: a tie of the first two goes to bottom 1, later ones keep the earlier
            out = torch.where(xs[0] > xs[1], xs[0], xs[1])
            for x in xs[2:]:
                out = torch.where(x > out, x, out)
            return (out,)
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return (out,)


@register("Crop")
class Crop(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 2, 2)
        p = lp.crop_param
        src, ref = shapes
        self.axis = canonical_axis(p.axis, len(src), self)
        n = len(src) - self.axis
        offsets = list(p.offset)
        if len(offsets) not in (0, 1, n):
            self.fail(f"{len(offsets)} offsets for {n} cropped axes (need 0, 1 or {n})")
        offsets = offsets * n if len(offsets) == 1 else (offsets or [0] * n)
        for i, off in enumerate(offsets):
            a = self.axis + i
            if off + ref[a] > src[a]:
                self.fail(f"crop of axis {a}: offset {off} + size {ref[a]} exceeds {src[a]}")
        self.offsets = offsets

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> Tops:
        idx = [slice(None)] * self.axis + [slice(o, o + ref.shape[self.axis + i])
                                            for i, o in enumerate(self.offsets)]
        return (x[tuple(idx)],)


@register("DummyData")
class DummyData(Layer):
    """Tops of declared shapes filled by `data_filler` (one for all, or one per top; constant 0 by
    default): constant tops once, random ones anew at every forward, as dummy_data_layer.cpp does."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        p, n = lp.dummy_data_param, len(lp.top)
        if shapes:
            self.fail("takes no bottom blobs")
        legacy = [list(p.num), list(p.channels), list(p.height), list(p.width)]
        if p.shape and any(legacy):
            self.fail("give either shape or num/channels/height/width, not both")
        if p.shape:
            if len(p.shape) not in (1, n):
                self.fail(f"{len(p.shape)} shapes for {n} tops: give 1 or one per top")
            self.shapes = [tuple(p.shape[i if len(p.shape) > 1 else 0].dim) for i in range(n)]
        else:
            for name, values in zip(("num", "channels", "height", "width"), legacy):
                if len(values) not in (1, n):
                    self.fail(f"{len(values)} value(s) of {name} for {n} tops: give 1 or one per top")
            self.shapes = [tuple(v[i if len(v) > 1 else 0] for v in legacy) for i in range(n)]
        if any(d < 0 for s in self.shapes for d in s) or any(math.prod(s) > MAX_BLOB_ELEMENTS for s in self.shapes):
            self.fail(f"top shapes {self.shapes} exceed Caffe's blob size limit")
        if len(p.data_filler) not in (0, 1, n):
            self.fail(f"{len(p.data_filler)} data_filler(s) for {n} tops: give 0, 1 or one per top")
        fillers = list(p.data_filler) or [pb.FillerParameter(type="constant", value=0)]
        self.fillers = [fillers[i if len(fillers) > 1 else 0] for i in range(n)]
        self.device, self.dtype = ctx.device, ctx.dtype
        self.fixed = [None] * n

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [torch.Size(s) for s in self.shapes]

    def forward(self) -> Tops:
        from ..fillers import fill
        outs = []
        for i, (shape, filler) in enumerate(zip(self.shapes, self.fillers)):
            if self.fixed[i] is not None:
                outs.append(self.fixed[i])
                continue
            t = torch.empty(shape, device=self.device, dtype=self.dtype)
            fill(t, filler, None, f"layer '{self.layer_name}' top {i}")
            if filler.type == "constant":
                self.fixed[i] = t
            outs.append(t)
        return tuple(outs)
