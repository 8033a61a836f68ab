"""Caffe's LRN layer, and its cross-channel form as one autograd op with Caffe's own backward."""
import torch

from .. import caffe_pb2 as pb
from .base import Layer, register
from .vision import caffe_pool2d


def _window_sum(t, size):
    """Sum over `size` neighbouring channels, zeros beyond the edges (Caffe's padded square).

    A sum of shifted slices rather than a pooling call: torch.compile fuses it with the pointwise
    work around it into one kernel, and it keeps the input's memory format (channels_last)."""
    half = (size - 1) // 2
    c = t.shape[1]
    padded = torch.nn.functional.pad(t, (0, 0, 0, 0, half, half))
    out = padded[:, 0:c]
    for i in range(1, size):
        out = out + padded[:, i:i + c]
    return out


class _CrossChannelLRN(torch.autograd.Function):
    """y = x * (k + alpha/size * sum_window x^2)^-beta, computed in float32 at least (bf16 inputs
    included, as Caffe's float layer does). Saves only x and the scale; the backward is Caffe's:
    dx = dy * scale^-beta - (2 alpha beta / size) * x * sum_window(dy * y / scale)."""

    @staticmethod
    def forward(ctx, x, size, alpha, beta, k):
        xf = x if x.dtype == torch.float64 else x.float()
        scale = _window_sum(xf * xf, size).mul_(alpha / size).add_(k)
        ctx.save_for_backward(x, scale)
        ctx.params = (size, alpha, beta)
        return (xf * scale.pow(-beta)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, scale = ctx.saved_tensors
        size, alpha, beta = ctx.params
        xf = x.to(scale.dtype)
        g = grad.to(scale.dtype)
        inv = scale.pow(-beta)
        ratio = _window_sum(g * xf * inv / scale, size)
        dx = g * inv - (2.0 * alpha * beta / size) * xf * ratio
        return dx.to(x.dtype), None, None, None, None


def lrn_across(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's ACROSS_CHANNELS LRN on (N, C, H, W); same output and gradient as Caffe's layer."""
    if size % 2 == 0:
        raise ValueError(f"LRN local_size must be odd (Caffe's rule), got {size}")
    return _CrossChannelLRN.apply(x, size, float(alpha), float(beta), float(k))


@register("LRN")
class LRN(Layer):
    def __init__(self, lp, shapes, ctx):
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.lrn_param
        if p.local_size % 2 == 0:
            self.fail(f"local_size must be odd (Caffe's rule), got {p.local_size}")
        if len(shapes[0]) != 4:
            self.fail(f"LRN needs a 4-D input, got shape {shapes[0]}")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.within = p.norm_region == pb.LRNParameter.WITHIN_CHANNEL

    def out_shapes(self, shapes):
        return [shapes[0]]

    def forward(self, x):
        if not self.within:
            return (lrn_across(x, self.size, self.alpha, self.beta, self.k),)
        # WITHIN_CHANNEL: Caffe averages x^2 over a padded size x size window (always size^2 terms)
        # and uses 1 + alpha * avg; its `k` does not enter.
        half = (self.size - 1) // 2
        avg = caffe_pool2d(x * x, "ave", (self.size,) * 2, (1, 1), (half, half))
        return (x * torch.pow(1 + self.alpha * avg, -self.beta),)
