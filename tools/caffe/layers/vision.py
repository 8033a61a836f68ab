"""Spatial layers with Caffe's exact geometry: Convolution, Deconvolution, Pooling (ceil rounding)."""
import torch
import torch.nn.functional as F

from .. import caffe_pb2 as pb
from ..ops import _ave_divisor, caffe_pool2d, caffe_pool_size  # noqa: F401 (the layers' arithmetic)
from .base import BuildContext, Layer, Shapes, Tops, register, spatial_geometry

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@register("Convolution", "Deconvolution")
class Convolution(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1)
        p = lp.convolution_param
        if p.axis != 1:
            self.fail(f"convolution axis {p.axis} is not supported (only 1)")
        if any(s != shapes[0] for s in shapes[1:]):
            self.fail(f"all bottoms must have the same shape, got {shapes}")
        nd = len(shapes[0]) - 2
        if nd not in _CONV:
            self.fail(f"needs a 3-D to 5-D input (N, C, spatial...), got shape {shapes[0]}")
        self.kernel, self.stride, self.pad, self.dilation = spatial_geometry(p, nd, self, "convolution")
        self.group, self.deconv = p.group, lp.type == "Deconvolution"
        channels, out = shapes[0][1], p.num_output
        if not out:
            self.fail("convolution_param.num_output must be set and positive")
        if self.group < 1 or channels % self.group or out % self.group:
            self.fail(f"group {self.group} must divide input channels {channels} and num_output {out}")
        shape = ((channels, out // self.group) if self.deconv else
                 (out, channels // self.group)) + self.kernel
        ctx.param(self, "weight", 0, shape, p.weight_filler)
        self.bias = None
        self.blob_names = ("weight",)
        if p.bias_term:
            ctx.param(self, "bias", 1, (out,), p.bias_filler)
            self.blob_names = ("weight", "bias")
        self.nd = nd

    def out_shapes(self, shapes: Shapes) -> Shapes:
        out = self.weight.shape[1] * self.group if self.deconv else self.weight.shape[0]
        spatial = []
        for n, k, s, p, d in zip(shapes[0][2:], self.kernel, self.stride, self.pad, self.dilation):
            extent = d * (k - 1) + 1
            size = s * (n - 1) + extent - 2 * p if self.deconv else (n + 2 * p - extent) // s + 1
            if size <= 0:
                self.fail(f"kernel {self.kernel} (dilation {self.dilation}) does not fit the padded "
                          f"input {tuple(shapes[0][2:])}")
            spatial.append(size)
        return [(shapes[0][0], out, *spatial) for _ in shapes]

    def forward(self, *xs: torch.Tensor) -> Tops:
        if self.deconv:
            op = _DECONV[self.nd]
            return tuple(op(x, self.weight, self.bias, self.stride, self.pad, 0, self.group,
                            self.dilation) for x in xs)
        op = _CONV[self.nd]
        return tuple(op(x, self.weight, self.bias, self.stride, self.pad, self.dilation, self.group)
                     for x in xs)


@register("Pooling")
class Pooling(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.pooling_param
        if len(shapes[0]) != 4:
            self.fail(f"pooling needs a 4-D input (N, C, H, W), got shape {shapes[0]}")
        if p.pool == pb.PoolingParameter.STOCHASTIC:
            self.fail("STOCHASTIC pooling is not supported (use MAX or AVE)")
        self.method = "max" if p.pool == pb.PoolingParameter.MAX else "ave"
        if self.n_top > (2 if self.method == "max" else 1):  # pooling_layer.hpp: MaxTopBlobs
            most = "1 or 2 tops (the second: the mask)" if self.method == "max" else "1 top"
            self.fail(f"{self.method.upper()} pooling has {most}, the net gives {self.n_top}")
        self.ceil = p.round_mode == pb.PoolingParameter.CEIL
        self.global_pool = p.global_pooling
        if self.global_pool:
            if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
                self.fail("global_pooling takes no kernel size")
            self.kernel, self.stride, self.pad = tuple(shapes[0][2:]), (1, 1), (0, 0)
            if any(p.HasField(f) and getattr(p, f) for f in ("pad", "pad_h", "pad_w")):
                self.fail("global_pooling needs pad 0")
        else:
            self.kernel, self.stride, self.pad, _ = spatial_geometry(p, 2, self, "pooling")
        if any(pd >= k for pd, k in zip(self.pad, self.kernel)):
            self.fail(f"pad {self.pad} must be smaller than kernel {self.kernel}")
        h, w = shapes[0][2:]
        if not self.global_pool and any(n + 2 * pd < k for n, pd, k in
                                        zip((h, w), self.pad, self.kernel)):
            self.fail(f"kernel {self.kernel} is larger than the padded input {h}x{w}")

    def out_shapes(self, shapes: Shapes) -> Shapes:
        n, c, h, w = shapes[0]
        if self.global_pool:
            return [(n, c, 1, 1)] * self.n_top
        clip = any(self.pad)
        return [(n, c) + tuple(caffe_pool_size(size, k, s, p, clip, self.ceil) for size, k, s, p in
                               zip((h, w), self.kernel, self.stride, self.pad))] * self.n_top

    def forward(self, x: torch.Tensor) -> Tops:
        mask = self.n_top == 2  # MAX's second top: where each maximum was, as Caffe's use_top_mask gives it
        if self.global_pool:
            if self.method == "max":  # the gradient goes to the first maximum only (pooling_layer.cpp)
                flat = x.flatten(2)
                first = flat.argmax(dim=2, keepdim=True)
                top = flat.gather(2, first).unsqueeze(-1)
                return (top, first.unsqueeze(-1).to(x.dtype)) if mask else (top,)
            return (x.mean(dim=(2, 3), keepdim=True),)
        out = caffe_pool2d(x, self.method, self.kernel, self.stride, self.pad, ceil=self.ceil, mask=mask)
        return out if mask else (out,)


@register("SPP")
class SPP(Layer):
    """Spatial pyramid pooling (spp_layer.cpp): at level l, 2^l x 2^l bins of kernel ceil(H / 2^l), stride the
    kernel, pad half the remainder, pooled as Caffe's PoolingLayer, flattened and concatenated over the
    levels; pyramid_height 1 is that one pooling, (N, C, 1, 1)."""

    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.spp_param
        if len(shapes[0]) != 4:
            self.fail(f"SPP needs a 4-D input (N, C, H, W), got shape {tuple(shapes[0])}")
        if p.pyramid_height < 1:
            self.fail("spp_param.pyramid_height must be at least 1")
        if p.pool == pb.SPPParameter.STOCHASTIC:
            self.fail("STOCHASTIC pooling is not supported (use MAX or AVE)")
        self.method = "max" if p.pool == pb.SPPParameter.MAX else "ave"
        h, w = shapes[0][2:]
        self.levels = []
        for level in range(p.pyramid_height):
            bins = 2 ** level
            kernel = (-(-h // bins), -(-w // bins))
            pad = ((kernel[0] * bins - h + 1) // 2, (kernel[1] * bins - w + 1) // 2)
            if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
                self.fail(f"pyramid level {level}: {bins}x{bins} bins of a {h}x{w} input need pad {pad} "
                          f"below kernel {kernel} (Caffe's pooling refuses it)")
            self.levels.append((kernel, pad))

    def out_shapes(self, shapes: Shapes) -> Shapes:
        n, c, h, w = shapes[0]
        if len(self.levels) == 1:
            return [(n, c, 1, 1)]
        total = 0
        for kernel, pad in self.levels:
            clip = any(pad)
            total += c * caffe_pool_size(h, kernel[0], kernel[0], pad[0], clip) * \
                caffe_pool_size(w, kernel[1], kernel[1], pad[1], clip)
        return [(n, total)]

    def forward(self, x: torch.Tensor) -> Tops:
        outs = [caffe_pool2d(x, self.method, kernel, kernel, pad) for kernel, pad in self.levels]
        if len(outs) == 1:
            return (outs[0],)
        return (torch.cat([o.flatten(1) for o in outs], 1),)
