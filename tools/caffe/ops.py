"""Caffe's arithmetic as plain functions, apart from the layer registry: pooling with Caffe's output size
and rounding, and the cross-channel LRN as one autograd op with Caffe's own backward. The CFN uses them
without loading any Caffe layer; tools/caffe/layers wraps them as Pooling and LRN."""
from typing import Any, Optional, Tuple

import torch
import torch.nn.functional as F

FLT_MAX = 3.4028234663852886e38  # Caffe's -FLT_MAX starts every max-pooling window


def caffe_pool_size(size: int, kernel: int, stride: int, pad: int, clip: bool, ceil: bool = True) -> int:
    """Caffe's pooled length: rounds up (round_mode CEIL, the default) or down (FLOOR), then (when any
    pad is set) drops a last window that would start in the padding."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _torch_size(size, kernel, stride, pad, ceil):
    if not ceil:
        return (size + 2 * pad - kernel) // stride + 1
    out = (size + 2 * pad - kernel + stride - 1) // stride + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return out


def caffe_pool2d(x: torch.Tensor, method: str, kernel: Tuple[int, int], stride: Tuple[int, int], pad: Tuple[int, int],
                 fast: bool = True, ceil: bool = True, mask: bool = False) -> Any:
    """MAX or AVE pooling of an (N, C, H, W) tensor exactly as Caffe's PoolingLayer computes it
    (`ceil`: round_mode CEIL, Caffe's default; False: FLOOR). With `mask` (MAX only), also Caffe's second
    top: each window's first maximum (row-major, a strict >) as its index h * W + w in the input plane, as
    floats."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    h, w = x.shape[-2:]
    clip = bool(ph or pw)  # Caffe checks both axes whenever either has padding
    oh, ow = caffe_pool_size(h, kh, sh, ph, clip, ceil), caffe_pool_size(w, kw, sw, pw, clip, ceil)
    torch_ok = (fast and ph <= kh // 2 and pw <= kw // 2 and
                (oh, ow) == (_torch_size(h, kh, sh, ph, ceil), _torch_size(w, kw, sw, pw, ceil)))
    if torch_ok:  # PyTorch's rounding agrees with Caffe here (the usual case): use the fused kernel
        if method == "max":
            if mask:  # PyTorch's indices are Caffe's: the first maximum, in the unpadded plane
                out, where = F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil, return_indices=True)
                return out, where.to(x.dtype)
            return F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil)
        return F.avg_pool2d(x, kernel, stride, pad, ceil_mode=ceil, count_include_pad=True)
    # General case: pad explicitly to cover every Caffe window, then pool without padding.
    extra_h, extra_w = (oh - 1) * sh + kh - h - ph, (ow - 1) * sw + kw - w - pw
    if method == "max":
        xp = F.pad(x, (pw, extra_w, ph, extra_h), value=float("-inf"))
        # Caffe starts each window at -FLT_MAX: empty windows and all -inf windows give -FLT_MAX.
        if mask:
            out, where = F.max_pool2d(xp, kernel, stride, return_indices=True)
            wp = xp.shape[-1]  # from the padded plane back to the input's
            where = (where // wp - ph) * w + (where % wp - pw)
            return out.clamp_min(-FLT_MAX), where.to(x.dtype)
        return F.max_pool2d(xp, kernel, stride).clamp_min(-FLT_MAX)
    xp = F.pad(x, (pw, extra_w, ph, extra_h))
    sums = F.avg_pool2d(xp, kernel, stride, divisor_override=1)
    return sums / _ave_divisor(oh, ow, h, w, kernel, stride, pad, x)


def _ave_divisor(oh, ow, h, w, kernel, stride, pad, like):
    # Caffe divides by the window clipped to the padded input (not to the valid input).
    def sizes(n_out, size, k, s, p):
        starts = torch.arange(n_out, device=like.device) * s - p
        return torch.minimum(starts + k, torch.full_like(starts, size + p)) - starts
    dh = sizes(oh, h, kernel[0], stride[0], pad[0])
    dw = sizes(ow, w, kernel[1], stride[1], pad[1])
    return (dh[:, None] * dw[None, :]).to(like.dtype)


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
    def forward(ctx: Any, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        xf = x if x.dtype == torch.float64 else x.float()
        scale = _window_sum(xf * xf, size).mul_(alpha / size).add_(k)
        ctx.save_for_backward(x, scale)
        ctx.params = (size, alpha, beta)
        return (xf * scale.pow(-beta)).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        x, scale = ctx.saved_tensors
        size, alpha, beta = ctx.params
        xf = x.to(scale.dtype)
        g = grad.to(scale.dtype)
        inv = scale.pow(-beta)
        ratio = _window_sum(g * xf * inv / scale, size)
        dx = g * inv - (2.0 * alpha * beta / size) * xf * ratio
        return dx.to(x.dtype), None, None, None, None


def lrn_across(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> torch.Tensor:
    """Caffe's ACROSS_CHANNELS LRN on (N, C, H, W); same output and gradient as Caffe's layer."""
    if size % 2 == 0:
        raise ValueError(f"LRN local_size must be odd (Caffe's rule), got {size}")
    return _CrossChannelLRN.apply(x, size, float(alpha), float(beta), float(k))
