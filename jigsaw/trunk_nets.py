"""The puzzle and PIRL nets on any torchvision trunk (tools/nets/trunks.py), with VISSL's heads:
jigsaw (`jigsaw_8gpu_resnet`): per tile Linear(D, 1000) + BatchNorm + ReLU, the nine concatenated, Linear(9000, P);
PIRL (`pirl_jigsaw_4node_resnet`): the image through Linear(D, 128); each tile through Linear(D, 128), the nine
concatenated, Linear(1152, 128). The nine tiles go through the trunk as one folded (9B, ...) batch, so every
BatchNorm normalises over all positions of all puzzles at once."""
from typing import Tuple

import torch
from torch import nn

from tools.nets.trunks import Trunk

JIGSAW_PROJECTION = 1000  # VISSL's per-tile width (mlp dims [2048, 1000])
PIRL_DIM = 128            # VISSL's embedding (mlp dims [2048, 128], then [1152, 128])


def _fold(tiles: torch.Tensor) -> torch.Tensor:
    b, n = tiles.shape[:2]
    if n != 9:
        raise ValueError(f"expected (B, 9, C, H, W) tiles, got {tuple(tiles.shape)}")
    return tiles.reshape(b * 9, *tiles.shape[2:])


def _param_groups(modules, no_decay, decay_bias=True):
    """Caffe solver groups: weights decayed; BatchNorm (and biases unless decay_bias) not (VISSL's
    regularize_bn False; regularize_bias True for jigsaw, False for PIRL)."""
    skip = {id(p) for p in no_decay}
    decay, plain = [], []
    for m in modules:
        for name, p in m.named_parameters():
            (plain if id(p) in skip or (name.endswith("bias") and not decay_bias) else decay).append(p)
    return [dict(params=decay, lr_mult=1.0, decay_mult=1.0), dict(params=plain, lr_mult=1.0, decay_mult=0.0)]


class TrunkPuzzleNet(nn.Module):
    """forward: (B, 9, 3, T, T) tiles -> (B, P) permutation logits."""

    def __init__(self, trunk: Trunk, num_permutations: int, projection: int = JIGSAW_PROJECTION):
        super().__init__()
        self.trunk, self.num_permutations = trunk, num_permutations
        self.project = nn.Sequential(nn.Linear(trunk.dim, projection), nn.BatchNorm1d(projection), nn.ReLU())
        self.classify = nn.Linear(9 * projection, num_permutations)

    @property
    def stage_names(self) -> Tuple[str, ...]:
        return self.trunk.stage_names

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        feats = self.project(self.trunk(_fold(tiles)))
        return self.classify(feats.reshape(tiles.shape[0], -1))

    def param_groups(self):
        return _param_groups([self], self.trunk.no_decay() + list(self.project[1].parameters()))


class PIRLNet(nn.Module):
    """embed_image: (B, 3, S, S) -> (B, 128); embed_tiles: (B, 9, 3, T, T) -> (B, 128); not normalised."""

    def __init__(self, trunk: Trunk, dim: int = PIRL_DIM):
        super().__init__()
        self.trunk = trunk
        self.image_head = nn.Linear(trunk.dim, dim)
        self.tile_head = nn.Linear(trunk.dim, dim)
        self.join = nn.Linear(9 * dim, dim)

    @property
    def stage_names(self) -> Tuple[str, ...]:
        return self.trunk.stage_names

    def embed_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.trunk(images))

    def embed_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        per_tile = self.tile_head(self.trunk(_fold(tiles)))
        return self.join(per_tile.reshape(tiles.shape[0], -1))

    def forward(self, images: torch.Tensor, tiles: torch.Tensor):
        return self.embed_image(images), self.embed_tiles(tiles)

    def param_groups(self):
        return _param_groups([self], self.trunk.no_decay(), decay_bias=False)
