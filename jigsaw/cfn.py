"""The Context-Free Network: nine AlexNet branches with shared weights, folded into the batch."""
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tools import caffe_pb2 as pb
from tools.atomic import atomic_open
from tools.caffemodel import read_caffemodel, write_caffemodel
from tools.errors import CaffeError, UserError
from tools.fillers import fill
from tools.layers.lrn import lrn_across
from tools.layers.vision import caffe_pool2d
from tools.prototxt import read_net, write_prototxt

from .architecture import BRANCH, CONVS, DROPOUT, FILLERS, PARAM_MULTS, SHARED, WEIGHTED, pool5_side, widths_for
from .caffe_form import cfn_prototxt


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
    original caffemodel (conv1..conv5, fc6, fc7, fc8), so `from_caffe`/`to_caffe` map 1:1.
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
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        for name, (std, bias) in FILLERS.items():
            layer = getattr(self, name)
            w = torch.empty(layer.weight.shape)
            filler = pb.FillerParameter(type="gaussian", std=std) if init == "caffe" else \
                pb.FillerParameter(type="msra")
            fill(w, filler, g)
            layer.weight.copy_(w)
            layer.bias.fill_(bias if init == "caffe" else 0.0)

    @torch.no_grad()
    def scale_to_input(self, tiles):
        """For init="msra": He's gain assumes unit-variance inputs; the CFN's are on a 0-255 scale
        (RMS 30-80 after a recipe's means), which multiplies every activation and logit by that RMS.
        With zero biases the net is positively homogeneous (the LRN aside), so dividing each of the
        eight weight layers by RMS^(1/8) brings the logits back to He's scale while every layer keeps
        weights of a size Adam's absolute steps suit (dividing conv1 alone left it at 1e-3, and
        Adam's first steps of 1e-3 blew the loss up). Returns the RMS."""
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

    def caffe_blobs(self):
        """{caffe layer name: [weight, bias]} for the Caffe form (shared weights under every branch)."""
        out = {}
        for name in WEIGHTED:
            layer = getattr(self, name)
            arrays = [layer.weight.detach().float().cpu().numpy(), layer.bias.detach().float().cpu().numpy()]
            names = [f"{name}_s{i}" for i in range(1, 10)] if name in SHARED else [name]
            out.update({n: arrays for n in names})
        return out

    def to_caffe(self, prototxt_path, caffemodel_path, recipe=None, permutations=None, train_val_path=None):
        """Write Caffe's own deploy form (input (1, 27, 64, 64), Slice, shared branches, prob); with
        `recipe`, also a train_val in that recipe's form (the jigsaw fork's data layers for jps /
        jps++; default path STEM_train_val.prototxt) and, with `permutations`, its hash file
        permutations_N.bin beside it (the fork's .bin form and name). Returns the paths written."""
        net = read_net(cfn_prototxt(self.widths, self.num_permutations, "deploy", tile=self.tile))
        write_prototxt(prototxt_path, net)
        write_caffemodel(caffemodel_path, net, self.caffe_blobs())
        written = [prototxt_path, caffemodel_path]
        if recipe:
            train_val_path = train_val_path or os.path.splitext(prototxt_path)[0] + "_train_val.prototxt"
            name = f"permutations_{self.num_permutations}.bin"
            text = cfn_prototxt(self.widths, self.num_permutations, "train_val", tile=self.tile,
                                recipe=recipe, hash_file=name)
            with atomic_open(train_val_path, "w") as f:
                f.write(text)
            written.append(train_val_path)
            if permutations is not None:
                from .permutations import load_permutations, save_permutations
                hash_path = os.path.join(os.path.dirname(os.path.abspath(train_val_path)), name)
                if os.path.exists(hash_path) and not np.array_equal(load_permutations(hash_path), permutations):
                    raise UserError(f"{hash_path}: holds other permutations; not overwritten")
                save_permutations(hash_path, permutations)
                written.append(hash_path)
        return written

    @classmethod
    def from_caffe(cls, prototxt, caffemodel):
        """A CFN with the weights of an original (or our) CFN .caffemodel, mapped by layer name."""
        net = read_net(prototxt) if prototxt else None
        _, named = read_caffemodel(caffemodel)
        blobs = {}
        for name, arrays in named:
            base = name.rsplit("_s", 1)[0] if "_s" in name else name
            if base in WEIGHTED and arrays and base not in blobs:
                blobs[base] = arrays
        missing = [n for n in WEIGHTED if n not in blobs]
        if missing:
            raise CaffeError(f"{caffemodel}: no weights for CFN layer(s) {', '.join(missing)} "
                             "(expected conv1..conv5 or conv1_s1.., fc6, fc7, fc8)")
        for n in WEIGHTED:  # shapes before sizes: a forged header must not size the net
            shape = tuple(blobs[n][0].shape)
            if len(shape) != (4 if n in CONVS else 2) or min(shape) <= 0:
                raise CaffeError(f"{caffemodel}: layer '{n}' weight blob has shape {shape}; a CFN needs "
                                 f"{'(out, in, k, k)' if n in CONVS else '(out, in)'} with every size positive")
            if len(blobs[n]) > 1 and tuple(blobs[n][1].shape) not in ((shape[0],), (1, 1, 1, shape[0])):
                raise CaffeError(f"{caffemodel}: layer '{n}' bias blob has shape {tuple(blobs[n][1].shape)}, "
                                 f"its weights have {shape[0]} outputs")
        widths = {n: blobs[n][0].shape[0] for n in (*CONVS, "fc6", "fc7")}
        perms = blobs["fc8"][0].shape[0]
        side = int(round(math.sqrt(blobs["fc6"][0].shape[1] // widths["conv5"])))
        tile = next((t for t in range(32, 256) if cls.pool5_side(t) == side), 64)
        if net is not None:
            for layer in net.layer:
                if layer.name == "fc8" and layer.inner_product_param.num_output not in (0, perms):
                    raise CaffeError(f"{prototxt}: fc8 has {layer.inner_product_param.num_output} "
                                     f"outputs, the weights have {perms}")
        model = cls(num_permutations=perms, width=widths, tile=tile)
        with torch.no_grad():
            for name, arrays in blobs.items():
                layer = getattr(model, name)
                for target, blob in zip((layer.weight, layer.bias), arrays):
                    if tuple(blob.shape) != tuple(target.shape) and blob.data.size != target.numel():
                        raise CaffeError(f"{caffemodel}: layer '{name}' blob shape {tuple(blob.shape)}, "
                                         f"the CFN expects {tuple(target.shape)}")
                    target.copy_(torch.from_numpy(blob.data.astype("float32").reshape(target.shape)))
        return model

