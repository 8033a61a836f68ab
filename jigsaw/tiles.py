"""3x3 jigsaw puzzles from uint8 images, batched on the device; plus a per-image reference.

Recipe (Noroozi's train_val_cfn_jps): from a 256 px image take a 255 px crop (random in training,
centred in testing), split it into 3x3 cells of 85 px, take a random 64x64 tile in each cell
(offset 0..21), place the tiles in the order of one permutation from the set (position t holds
cell perm[t]; the label is the permutation's index) and subtract from each tile its own
per-channel mean. Tiles come out in Caffe's BGR order on a 0-255 scale, as the original weights
expect. Options: mean/std per tile (bbrattoli's PyTorch port) and random grayscale.

Tile statistics are computed from integer sums, so every result is exact and the batched and
per-image paths agree bit for bit whatever the reduction order.
"""
from dataclasses import dataclass

import numpy as np
import torch

GRID = 3


@dataclass(frozen=True)
class PuzzleConfig:
    crop: int = 255
    cell: int = 85
    tile: int = 64
    normalize: str = "mean"      # "mean": minus the tile's channel means; "meanstd": also / std
    gray_prob: float = 0.0       # probability of turning an image to grayscale before tiling
    bgr: bool = True             # Caffe channel order

    def __post_init__(self):
        if self.normalize not in ("mean", "meanstd"):
            raise ValueError(f"normalize must be 'mean' or 'meanstd', got {self.normalize!r}")
        if self.cell * GRID > self.crop or self.tile > self.cell:
            raise ValueError(f"3 cells of {self.cell} px must fit the {self.crop} px crop and hold "
                             f"a {self.tile} px tile")


@dataclass
class Draws:
    """The random choices behind a batch of puzzles (all (B,) or (B, 9) int64 / bool tensors)."""
    crop_y: torch.Tensor
    crop_x: torch.Tensor
    jitter_y: torch.Tensor   # per cell
    jitter_x: torch.Tensor
    label: torch.Tensor
    gray: torch.Tensor

    def to(self, device):
        # non_blocking: a blocking host-to-GPU copy waits for all queued GPU work, every iteration
        return Draws(*(getattr(self, f).to(device, non_blocking=True) for f in self.__dataclass_fields__))

    def item(self, b):
        return Draws(*(getattr(self, f)[b] for f in self.__dataclass_fields__))


def draw(batch, n_perms, image_size, cfg=PuzzleConfig(), generator=None, train=True):
    """Random draws for `batch` puzzles from images of `image_size` (H, W), on the CPU."""
    h, w = image_size
    if h < cfg.crop or w < cfg.crop:
        raise ValueError(f"images of {h}x{w} are smaller than the {cfg.crop} px crop")
    g = dict(generator=generator)
    if train:
        crop_y = torch.randint(0, h - cfg.crop + 1, (batch,), **g)
        crop_x = torch.randint(0, w - cfg.crop + 1, (batch,), **g)
    else:
        crop_y = torch.full((batch,), (h - cfg.crop) // 2)
        crop_x = torch.full((batch,), (w - cfg.crop) // 2)
    span = cfg.cell - cfg.tile + 1
    jy = torch.randint(0, span, (batch, GRID * GRID), **g)
    jx = torch.randint(0, span, (batch, GRID * GRID), **g)
    label = torch.randint(0, n_perms, (batch,), **g)
    gray = torch.rand(batch, **g) < cfg.gray_prob
    return Draws(crop_y, crop_x, jy, jx, label, gray)


def _gray(x):
    # ITU-R 601 luma in integers (as PIL's "L" mode): exact and identical on every path
    r, g, b = x[..., 0].int(), x[..., 1].int(), x[..., 2].int()
    return ((r * 299 + g * 587 + b * 114 + 500) // 1000).to(x.dtype)


def _normalize(t, cfg):
    """t: (..., C, tile, tile) uint8 -> float32 normalised per tile and channel."""
    n = cfg.tile * cfg.tile
    flat = t.reshape(*t.shape[:-2], n)
    s = flat.sum(-1, dtype=torch.int64)
    mean = (s.double() / n)
    x = t.float() - mean.float()[..., None, None]
    if cfg.normalize == "meanstd":
        sq = (flat.long() * flat.long()).sum(-1)
        var = (sq.double() - s.double() * s.double() / n) / (n - 1)
        std = var.clamp_min(0).sqrt().float()
        std = torch.where(std == 0, torch.ones_like(std), std)  # blank tiles: no division by 0
        x = x / std[..., None, None]
    return x


def make_puzzles(images, perms, draws, cfg=PuzzleConfig()):
    """Puzzles for a batch: images (B, H, W, 3) uint8 on any device, perms (N, 9) int64 tensor.

    Returns float32 tiles (B, 9, 3, tile, tile) on the images' device. One gather builds all
    9*B tiles; no Python loop over tiles or images.
    """
    dev = images.device
    d = draws.to(dev)
    b = images.shape[0]
    cells = perms.to(dev)[d.label]                      # (B, 9): cell shown at each position
    row, col = cells // GRID, cells % GRID
    top = d.crop_y[:, None] + row * cfg.cell + d.jitter_y.gather(1, cells)
    left = d.crop_x[:, None] + col * cfg.cell + d.jitter_x.gather(1, cells)
    ar = torch.arange(cfg.tile, device=dev)
    ys = (top[..., None] + ar)[:, :, :, None]           # (B, 9, tile, 1)
    xs = (left[..., None] + ar)[:, :, None, :]          # (B, 9, 1, tile)
    idx = torch.arange(b, device=dev)[:, None, None, None]
    tiles = images[idx, ys, xs]                          # (B, 9, tile, tile, C) uint8
    if cfg.gray_prob > 0 and bool(draws.gray.any()):  # asked of the host copy: no GPU sync
        g = _gray(tiles)[..., None].expand_as(tiles)
        tiles = torch.where(d.gray[:, None, None, None, None], g, tiles)
    if cfg.bgr:
        tiles = tiles.flip(-1)
    return _normalize(tiles.permute(0, 1, 4, 2, 3), cfg)


def make_puzzle_reference(image, perm, draws, cfg=PuzzleConfig()):
    """The same puzzle for one image (H, W, 3) uint8 array, the plain way: crop, cut, shuffle."""
    img = np.asarray(image)[int(draws.crop_y):int(draws.crop_y) + cfg.crop,
                            int(draws.crop_x):int(draws.crop_x) + cfg.crop]
    cells = []
    for c in range(GRID * GRID):
        r, q = divmod(c, GRID)
        y, x = r * cfg.cell + int(draws.jitter_y[c]), q * cfg.cell + int(draws.jitter_x[c])
        cells.append(img[y:y + cfg.tile, x:x + cfg.tile])
    tiles = []
    for t in range(GRID * GRID):
        tile = torch.from_numpy(np.ascontiguousarray(cells[int(perm[t])]))
        if bool(draws.gray):
            tile = _gray(tile)[..., None].expand_as(tile)
        if cfg.bgr:
            tile = tile.flip(-1)
        tiles.append(_normalize(tile.permute(2, 0, 1), cfg))
    return torch.stack(tiles)


def unshuffle(tiles, perm):
    """Put shuffled tiles (9, ...) back in grid order: position t holds cell perm[t]."""
    out = torch.empty_like(tiles)
    out[torch.as_tensor(perm, device=tiles.device)] = tiles
    return out
