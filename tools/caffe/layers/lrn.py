"""Caffe's LRN layer, and its cross-channel form as one autograd op with Caffe's own backward."""
import torch

from .. import caffe_pb2 as pb
from ..ops import caffe_pool2d, lrn_across  # noqa: F401 (the layer's arithmetic)
from .base import BuildContext, Layer, Shapes, Tops, register


@register("LRN")
class LRN(Layer):
    def __init__(self, lp: "pb.LayerParameter", shapes: Shapes, ctx: BuildContext) -> None:
        super().__init__(lp, shapes, ctx)
        self.check_bottoms(shapes, 1, 1)
        p = lp.lrn_param
        if p.local_size % 2 == 0:
            self.fail(f"local_size must be odd (Caffe's rule), got {p.local_size}")
        if len(shapes[0]) != 4:
            self.fail(f"LRN needs a 4-D input, got shape {shapes[0]}")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.within = p.norm_region == pb.LRNParameter.WITHIN_CHANNEL

    def out_shapes(self, shapes: Shapes) -> Shapes:
        return [shapes[0]]

    def forward(self, x: torch.Tensor) -> Tops:
        if not self.within:
            return (lrn_across(x, self.size, self.alpha, self.beta, self.k),)
        # WITHIN_CHANNEL: Caffe averages x^2 over a padded size x size window (always size^2 terms)
        # and uses 1 + alpha * avg; its `k` does not enter.
        half = (self.size - 1) // 2
        avg = caffe_pool2d(x * x, "ave", (self.size,) * 2, (1, 1), (half, half))
        return (x * torch.pow(1 + self.alpha * avg, -self.beta),)
