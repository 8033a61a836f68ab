"""What every layer shares: the Layer base class, the registry and Caffe's axis/geometry rules."""
from typing import Any, Callable, NoReturn, Optional, Protocol, Sequence, Tuple, Union

import torch
from torch import nn
from torch.func import functional_call

from .. import caffe_pb2 as pb
from ...run.errors import CaffeError
from ..ops import FLT_MAX  # noqa: F401 (the layers' name for it)

LAYERS = {}
MAX_BLOB_ELEMENTS = (1 << 31) - 1  # Caffe's own per-blob limit (INT_MAX)

Shape = Sequence[int]
Shapes = Sequence[Shape]
Tops = Union[torch.Tensor, Tuple[torch.Tensor, ...]]  # one tensor per top blob


class BuildContext(Protocol):
    """What a layer's constructor gets from the net builder (tools.caffe.net.BuildContext)."""
    device: Any
    dtype: torch.dtype
    seed: Optional[int]

    def param(self, layer: "Layer", attr: str, index: int, shape: Shape, filler: "pb.FillerParameter") -> None: ...

    def buffer(self, layer: "Layer", attr: str, shape: Shape) -> None: ...


def register(*types: str) -> Callable[[type], type]:
    """The class decorator that files a Layer under its Caffe type name(s); a name taken twice is refused."""
    def deco(cls: type) -> type:
        for t in types:
            if t in LAYERS:  # a second implementation under one type would silently replace the first
                raise ValueError(f"Caffe layer type '{t}' is registered twice ({LAYERS[t].__qualname__}, "
                                 f"{cls.__qualname__})")
            LAYERS[t] = cls
        return cls
    return deco


class Layer(nn.Module):
    """One Caffe layer: `forward(*bottoms)` returns a tuple with one tensor per top.

    `blob_names` lists, in Caffe's blob order, the attribute names of the learnable
    parameters and state buffers that a .caffemodel stores for this layer.
    """
    blob_names = ()

    def __init__(self, lp: "pb.LayerParameter", bottom_shapes: Shapes, ctx: "BuildContext") -> None:
        super().__init__()
        self.layer_name, self.layer_type = lp.name, lp.type
        self.n_bottom, self.n_top = len(lp.bottom), len(lp.top)

    def out_shapes(self, shapes: Shapes) -> Shapes:
        """Top shapes for these bottom shapes. Generic: run forward on meta tensors; layers whose
        shapes are simple override this (meta kernels cost seconds of lazy imports on first use)."""
        state = {k: torch.empty(v.shape, dtype=v.dtype, device="meta")
                 for k, v in list(self.named_parameters()) + list(self.named_buffers())}
        metas = tuple(torch.empty(s, device="meta") for s in shapes)
        with torch.no_grad():
            return [t.shape for t in functional_call(self, state, metas)]

    def fail(self, what: str) -> NoReturn:
        raise CaffeError(f"layer '{self.layer_name}' ({self.layer_type}): {what}")

    def check_bottoms(self, shapes: Shapes, n: int, at_most: Optional[int] = None) -> None:
        if len(shapes) < n or (at_most is not None and len(shapes) > at_most):
            want = n if at_most in (None, n) else f"{n} to {at_most}"
            self.fail(f"expects {want} bottom blob(s), got {len(shapes)}")

    def extra_repr(self) -> str:
        return f"name={self.layer_name!r}"


def canonical_axis(axis: int, ndim: int, layer: Layer) -> int:
    if not -ndim <= axis < max(ndim, 1):
        layer.fail(f"axis {axis} is out of range for a {ndim}-D blob")
    return axis % ndim if ndim else 0


def spatial_geometry(p: Any, nd: int, layer: Layer, kind: str) -> Tuple[Tuple[int, ...], ...]:
    """Kernel, stride, pad, dilation tuples for `nd` spatial axes from a Convolution/Pooling param."""
    def pick(repeated, h, w, default, name):
        has_hw = p.HasField(h) or p.HasField(w)
        values = list(repeated) if repeated is not None else []
        if has_hw:
            if nd != 2:
                layer.fail(f"{h}/{w} only apply to 2-D {kind}")
            if values:
                layer.fail(f"give either {name} or {h}/{w}, not both")
            return (getattr(p, h), getattr(p, w))
        if not values:
            if default is None:
                layer.fail(f"{name} is required")
            return (default,) * nd
        if len(values) == 1:
            return (values[0],) * nd
        if len(values) != nd:
            layer.fail(f"{name} has {len(values)} values for {nd} spatial axes")
        return tuple(values)

    def scalar(name):
        return [getattr(p, name)] if p.HasField(name) else []

    conv = isinstance(p, pb.ConvolutionParameter)
    kernel = pick(p.kernel_size if conv else scalar("kernel_size"), "kernel_h", "kernel_w",
                  None, "kernel_size")
    stride = pick(p.stride if conv else scalar("stride"), "stride_h", "stride_w", 1, "stride")
    pad = pick(p.pad if conv else scalar("pad"), "pad_h", "pad_w", 0, "pad")
    dilation = (1,) * nd
    if conv and p.dilation:
        dilation = tuple(p.dilation) * (nd if len(p.dilation) == 1 else 1)
        if len(dilation) != nd:
            layer.fail(f"dilation has {len(p.dilation)} values for {nd} spatial axes")
    if any(k <= 0 for k in kernel) or any(s <= 0 for s in stride):
        layer.fail(f"kernel {kernel} and stride {stride} must be positive")
    return kernel, stride, pad, dilation


def broadcast_shape(param_shape: Shape, axis: int, ndim: int) -> Tuple[int, ...]:
    return (1,) * axis + tuple(param_shape) + (1,) * (ndim - axis - len(param_shape))


def as_index(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.long) if t.dtype != torch.long else t


class _NoBackward(torch.autograd.Function):
    """Passes `out` through; asking it for a gradient is an error naming the layer."""

    @staticmethod
    def forward(ctx: Any, out: torch.Tensor, x: torch.Tensor, where: str) -> torch.Tensor:
        ctx.where = where
        return out.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> NoReturn:
        raise CaffeError(f"{ctx.where}: Caffe has no backward for this layer; freeze what is below it "
                         "(propagate_down: false) or leave it out of training")


def no_backward(layer: Layer, out: torch.Tensor, *bottoms: torch.Tensor) -> torch.Tensor:
    """`out` of a layer Caffe defines no gradient for: fine in inference, an error if a gradient is asked
    of any bottom that needs one."""
    if not torch.is_grad_enabled() or not any(b.requires_grad for b in bottoms):
        return out
    return _NoBackward.apply(out, bottoms[0], f"layer '{layer.layer_name}' ({layer.layer_type})")
