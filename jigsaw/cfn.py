"""The Context-Free Network: nine AlexNet branches with shared weights, folded into the batch."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from tools.caffe.fillers import Filler, fill
from tools.caffe.ops import caffe_pool2d, lrn_across
from tools.run.runtime import generator

from .architecture import BRANCH, DROPOUT, FILLERS, PARAM_MULTS, WEIGHTED, pool5_side, widths_for


def branch_forward(layers, x, upto="fc6", dropout=0.0):
    """One branch as architecture.BRANCH lists it (conv1 -> pool1 -> norm1 -> ... -> pool5, then fc6),
    on any object holding the layers `conv1`..`conv5` (and `fc6`): the CFN itself or a transfer backbone."""
    for layer in BRANCH:
        if layer.kind == "conv":
            x = F.relu(getattr(layers, layer.name)(x))
        elif layer.kind == "pool":
            x = caffe_pool2d(x, "max", (layer.kernel,) * 2, (layer.stride,) * 2, (0, 0))
        else:
            x = lrn_across(x, *layer.lrn)
    if upto == "pool5":
        return x
    side = math.isqrt(layers.fc6.in_features // x.shape[1])
    if x.shape[-2:] != (side, side):  # an image larger than a tile: fc6 as the convolution it is, a map
        n, _, h, w = x.shape
        cols = F.unfold(x, side).transpose(1, 2)                 # (N, positions, C*side*side)
        y = layers.fc6(cols).transpose(1, 2).reshape(n, -1, h - side + 1, w - side + 1)
        return F.dropout(F.relu(y), dropout, dropout > 0)
    return F.dropout(F.relu(layers.fc6(x.flatten(1))), dropout, dropout > 0)


class CFN(nn.Module):
    """forward: (B, 9, 3, 64, 64) float tiles -> (B, num_permutations) logits.

    The nine branches run as one trunk call on a (9B, 3, 64, 64) batch. Module names follow the
    original caffemodel (conv1..conv5, fc6, fc7, fc8), so jigsaw.caffe_form's `from_caffe`/`to_caffe` map 1:1.
    Pooling rounds up as Caffe's does: a 64 px tile gives pool5 3x3.
    """

    def __init__(self, num_permutations=1000, width=1.0, tile=64, dropout=DROPOUT, seed=None, init="caffe"):
        super().__init__()
        w = widths_for(width) if not isinstance(width, dict) else dict(width)
        self.widths, self.tile, self.num_permutations, self.dropout = w, tile, num_permutations, dropout
        c_in = 3
        for layer in BRANCH:
            if layer.kind == "conv":
                setattr(self, layer.name, nn.Conv2d(c_in, w[layer.name], layer.kernel, layer.stride, layer.pad,
                                                    groups=layer.group))
                c_in = w[layer.name]
        side = pool5_side(tile)
        self.fc6 = nn.Linear(w["conv5"] * side * side, w["fc6"])
        self.fc7 = nn.Linear(9 * w["fc6"], w["fc7"])
        self.fc8 = nn.Linear(w["fc7"], num_permutations)
        self.reset_parameters(seed, init)

    pool5_side = staticmethod(pool5_side)

    @torch.no_grad()
    def reset_parameters(self, seed=None, init="caffe"):
        """init="caffe": the original fillers (gaussian 0.01 conv, 0.005 fc6/fc7, 0.01 fc8; biases
        0 or 1), which start slowly (a few hundred iterations at lr 0.01 before loss moves).
        init="msra": He-normal weights and zero biases, a faster start for short runs."""
        if init not in ("caffe", "msra"):
            raise ValueError(f"init must be 'caffe' or 'msra', got {init!r}")
        g = generator(seed) if seed is not None else None
        for name, (std, bias) in FILLERS.items():
            layer = getattr(self, name)
            w = torch.empty(layer.weight.shape)
            fill(w, Filler("gaussian", std=std) if init == "caffe" else Filler("msra"), g)
            layer.weight.copy_(w)
            layer.bias.fill_(bias if init == "caffe" else 0.0)

    @torch.no_grad()
    def scale_to_input(self, tiles):
        """For init="msra": He's gain assumes unit-variance inputs; the CFN's are on a 0-255 scale
        (RMS 30-80 after a recipe's means), which multiplies every activation and logit by that RMS.
        With zero biases the net is positively homogeneous (the LRN aside), so dividing each of the
        eight weight layers by RMS^(1/8) brings the logits back to He's scale while every layer keeps
        weights of a size Adam's absolute steps suit (dividing conv1 alone left it at 1e-3, and
        Adam's first steps of 1e-3 blew the loss up). He's scale is not a softmax's: the max-pools and
        the nine branches' concatenation leave the logits' SD at 3-6, so the first loss is 1.5-5 x ln N
        (5.8 to 16.9 for ln 30 = 3.4), and it falls to ln N within a few iterations. Bringing it to ln N
        by scaling fc8 (or all eight layers) to a logit SD of 0.5 was measured on the in-domain benchmark
        and lowered the kNN gains at conv2-conv3 (3 seeds: +1.3 pt on average against +2.8), so it is not
        done (benchmarks/RESULTS.md). Returns the RMS."""
        rms = float(tiles.float().pow(2).mean().sqrt())
        if rms > 0:
            for layer in self._layers():
                layer.weight.div_(rms ** (1 / len(self._layers())))
        return rms

    def trunk(self, x, upto="fc6"):
        """One branch on (N, 3, tile, tile): features at 'pool5' (N, C, 3, 3) or 'fc6' (N, 1024)."""
        return branch_forward(self, x, upto, self.dropout if self.training else 0.0)

    def forward(self, tiles):
        b, n = tiles.shape[:2]
        if n != 9:
            raise ValueError(f"expected (B, 9, 3, {self.tile}, {self.tile}) tiles, got {tuple(tiles.shape)}")
        feats = self.trunk(tiles.reshape(b * 9, *tiles.shape[2:])).reshape(b, -1)
        x = F.dropout(F.relu(self.fc7(feats)), self.dropout, self.training)
        return self.fc8(x)

    def param_groups(self):
        """Caffe's multipliers for the CFN: weights lr_mult 1 / decay 1, biases lr_mult 2 / decay 0."""
        (w_lr, w_decay), (b_lr, b_decay) = PARAM_MULTS
        return [dict(params=[m.weight for m in self._layers()], lr_mult=w_lr, decay_mult=w_decay),
                dict(params=[m.bias for m in self._layers()], lr_mult=b_lr, decay_mult=b_decay)]

    def _layers(self):
        return [getattr(self, n) for n in WEIGHTED]
