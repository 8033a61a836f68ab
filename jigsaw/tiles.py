"""3x3 jigsaw puzzles from uint8 images, batched on the device, in any recipe (`jigsaw.recipes`).

A puzzle is nine tiles: position t shows grid cell perm[t] (cells row-major; the label is the
permutation's index), each tile a `tile` px square at a random offset 0..`jitter` inside its
`cell` px cell of a `crop` px crop. Tiles come out in Caffe's BGR order, on a 0-255 scale minus the
recipe's normalisation, as float32 (B, 9, 3, tile, tile).

Every random choice is an explicit field of `Draws` (crop, per-position offsets, per-channel extra
offsets, colour treatment, label, MergeData substitutions and the donor puzzle's own draws), so a
test can set them and compare with a transcription of the authors' C++ fed the same draws. The
whole batch is one gather plus elementwise work on the images' device: no per-tile Python.
"""
from dataclasses import dataclass, fields

import torch

from .recipes import GRID, PuzzleConfig  # noqa: F401 (a puzzle's settings; recipes names them)

# Colour rows give (r', g', b') from (r, g, b), as in the fork's data_transformer.cpp (gray and
# projection blocks); applied per puzzle, to values after the mean is removed.
GRAY = ((0.3333, 0.3333, 0.3333),) * 3
PROJECTION = ((0.8333, 0.3333, -0.1667), (0.3333, 0.3333, 0.3333), (-0.1667, 0.3333, 0.8333))
NONE, GRAYED, PROJECTED = 0, 1, 2  # colour codes in Draws.color


@dataclass
class Draws:
    """The random choices behind a batch of B puzzles, all int64 / bool tensors."""
    crop_y: torch.Tensor          # (B,)
    crop_x: torch.Tensor
    jitter_y: torch.Tensor        # (B, 9): per position, as the fork's loop over s
    jitter_x: torch.Tensor
    shift_y: torch.Tensor         # (B, 9, 3): per position and output channel (B, G, R)
    shift_x: torch.Tensor
    label: torch.Tensor           # (B,)
    color: torch.Tensor           # (B,): NONE, GRAYED or PROJECTED
    sub_from: torch.Tensor        # (B, 9): -1 keeps the tile, else the donor position that replaces it
    donor_offset: torch.Tensor    # (B,): donor image = (b + offset) % B (0: the same image)
    donor_jitter_y: torch.Tensor  # the donor puzzle's own draws (grid order, no permutation)
    donor_jitter_x: torch.Tensor
    donor_shift_y: torch.Tensor
    donor_shift_x: torch.Tensor
    donor_color: torch.Tensor

    def _map(self, fn):
        return Draws(*(fn(getattr(self, f.name)) for f in fields(self)))

    def to(self, device):
        # non_blocking: a blocking host-to-GPU copy waits for all queued GPU work, every iteration
        return self._map(lambda t: t.to(device, non_blocking=True))

    def slice(self, part):
        """The draws of puzzles `part` (a slice): one process's share of a batch."""
        return self._map(lambda t: t[part])

    def item(self, b):
        return self._map(lambda t: t[b])


def _offsets(shape, top, g):
    return torch.randint(0, top + 1, shape, **g) if top else torch.zeros(shape, dtype=torch.long)


def _colors(batch, cfg, g):
    if cfg.color == "jps":  # make_gray = rand()%10 >= 5; else color_proj = rand()%2 == 0
        gray, proj = torch.rand(batch, **g) < 0.5, torch.rand(batch, **g) < 0.5
        return torch.where(gray, GRAYED, torch.where(proj, PROJECTED, NONE))
    return torch.where(torch.rand(batch, **g) < cfg.gray_prob, GRAYED, NONE)


def draw(batch, n_perms, image_size, cfg=PuzzleConfig(), generator=None, train=True):
    """Random draws for `batch` puzzles from images of `image_size` (H, W), on the CPU."""
    h, w = image_size
    if h < cfg.min_image() or w < cfg.min_image():
        raise ValueError(f"images of {h}x{w} are smaller than the {cfg.min_image()} px the "
                         f"'{cfg.recipe}' puzzles read")
    g = dict(generator=generator)
    if cfg.random_crop and train:
        crop_y = torch.randint(0, h - cfg.crop + 1, (batch,), **g)
        crop_x = torch.randint(0, w - cfg.crop + 1, (batch,), **g)
    elif cfg.random_crop:
        crop_y, crop_x = torch.full((batch,), (h - cfg.crop) // 2), torch.full((batch,), (w - cfg.crop) // 2)
    else:
        crop_y = crop_x = torch.zeros(batch, dtype=torch.long)
    n = GRID * GRID
    jy, jx = _offsets((batch, n), cfg.jitter, g), _offsets((batch, n), cfg.jitter, g)
    sy, sx = _offsets((batch, n, 3), cfg.channel_shift, g), _offsets((batch, n, 3), cfg.channel_shift, g)
    label = torch.randint(0, n_perms, (batch,), **g)
    color = _colors(batch, cfg, g)
    sub_from = torch.full((batch, n), -1, dtype=torch.long)
    offset = torch.zeros(batch, dtype=torch.long)
    donor = [torch.zeros_like(jy), torch.zeros_like(jx), torch.zeros_like(sy), torch.zeros_like(sx),
             torch.zeros_like(color)]
    if cfg.substitute:
        count = torch.randint(0, cfg.substitute, (batch,), **g)       # rand() % max_substitute
        where = torch.rand(batch, n, **g).argsort(1)                   # distinct positions
        source = torch.rand(batch, n, **g).argsort(1)                  # distinct donor positions
        chosen = torch.arange(n)[None] < count[:, None]
        sub_from.scatter_(1, where, torch.where(chosen, source, -1))
        if cfg.donor == "other" and batch > 1:
            offset = torch.randint(1, batch, (batch,), **g)
        donor = [_offsets((batch, n), cfg.jitter, g), _offsets((batch, n), cfg.jitter, g),
                 _offsets((batch, n, 3), cfg.channel_shift, g), _offsets((batch, n, 3), cfg.channel_shift, g),
                 _colors(batch, cfg, g)]
    return Draws(crop_y, crop_x, jy, jx, sy, sx, label, color, sub_from, offset, *donor)


def _luma(t):
    """ITU-R 601 luma of (..., 3 [B, G, R], h, w) uint8 in integers (as PIL's "L" mode): exact."""
    b, g, r = t[..., 0, :, :].int(), t[..., 1, :, :].int(), t[..., 2, :, :].int()
    return ((r * 299 + g * 587 + b * 114 + 500) // 1000).to(t.dtype)[..., None, :, :].expand_as(t)


def _per_channel(t, cfg):
    """t: (..., 3, tile, tile) uint8 -> float32 minus each channel's mean (/ its std for meanstd).
    Statistics from integer sums: exact, whatever the reduction order."""
    n = cfg.tile * cfg.tile
    flat = t.reshape(*t.shape[:-2], n)
    s = flat.sum(-1, dtype=torch.int64)
    x = t.float() - (s.double() / n).float()[..., None, None]
    if cfg.per_tile == "meanstd":
        sq = (flat.long() * flat.long()).sum(-1)
        var = (sq.double() - s.double() * s.double() / n) / (n - 1)
        std = var.clamp_min(0).sqrt().float()
        x = x / torch.where(std == 0, torch.ones_like(std), std)[..., None, None]  # blank tiles
    return x


def _mvn(x, eps):
    """Caffe's MVN across channels on (..., 3, tile, tile), in float64: minus the mean over C*H*W,
    divided by (the standard deviation + eps)."""
    x = x.double()
    flat = x.flatten(-3)
    mean = flat.mean(-1)
    centred = x - mean[..., None, None, None]
    std = (centred.flatten(-3) ** 2).mean(-1).sqrt()
    return centred / (std + eps)[..., None, None, None]


def _recolor(x, code, device):
    """The fork's gray and projection on (B, 9, 3 [B, G, R], h, w) float32 holding integers, per tile
    by `code` (B, 9) on the host (no device sync): products in float64 summed in the fork's order
    (r, g, b), rounded to float32 as its Dtype buffer is. Untouched tiles are not computed."""
    flat = x.reshape(-1, *x.shape[2:])
    code = code.reshape(-1)
    gray = torch.nonzero(code == GRAYED).flatten().to(device, non_blocking=True)
    proj = torch.nonzero(code == PROJECTED).flatten().to(device, non_blocking=True)
    if len(gray):
        t = flat[gray].double()
        b, g, r = t[:, 0], t[:, 1], t[:, 2]
        flat[gray] = (GRAY[0][0] * r + GRAY[0][1] * g + GRAY[0][2] * b).float()[:, None].expand(-1, 3, -1, -1)
    if len(proj):
        t = flat[proj].double()
        b, g, r = t[:, 0], t[:, 1], t[:, 2]
        rows = [m[0] * r + m[1] * g + m[2] * b for m in PROJECTION]            # r', g', b'
        flat[proj] = torch.stack(rows[::-1], dim=1).float()                     # back to B, G, R
    return flat.reshape(x.shape)


def make_puzzles(images, perms, draws, cfg=PuzzleConfig()):
    """Puzzles for a batch: images (B, H, W, 3) uint8 RGB on any device, perms (N, 9) int64.

    Returns float32 tiles (B, 9, 3, tile, tile) on the images' device."""
    dev = images.device
    d = draws.to(dev)
    b = images.shape[0]
    rows = torch.arange(b, device=dev)[:, None]
    sub = d.sub_from >= 0
    pick = d.sub_from.clamp_min(0)
    # per tile: which image, which grid cell, which offsets; substituted tiles take the donor's
    image = torch.where(sub, (rows + d.donor_offset[:, None]) % b, rows)
    cells = torch.where(sub, d.sub_from, perms.to(dev)[d.label])
    jy = torch.where(sub, d.donor_jitter_y.gather(1, pick), d.jitter_y)
    jx = torch.where(sub, d.donor_jitter_x.gather(1, pick), d.jitter_x)
    pick3 = pick[..., None].expand(-1, -1, 3)
    sy = torch.where(sub[..., None], d.donor_shift_y.gather(1, pick3), d.shift_y)
    sx = torch.where(sub[..., None], d.donor_shift_x.gather(1, pick3), d.shift_x)
    color = torch.where(sub, d.donor_color[:, None], d.color[:, None]) if cfg.color == "luma" else None
    top = (d.crop_y[:, None] + (cells // GRID) * cfg.cell + jy)[..., None] + sy     # (B, 9, 3)
    left = (d.crop_x[:, None] + (cells % GRID) * cfg.cell + jx)[..., None] + sx
    ar = torch.arange(cfg.tile, device=dev)
    ys = (top[..., None] + ar)[..., None]                                          # (B, 9, 3, T, 1)
    xs = (left[..., None] + ar)[..., None, :]                                      # (B, 9, 3, 1, T)
    channel = torch.tensor([2, 1, 0], device=dev)[:, None, None]                   # BGR from RGB
    tiles = images[image[..., None, None, None], ys, xs, channel]                  # (B, 9, 3, T, T) uint8
    if cfg.color == "luma" and cfg.gray_prob > 0 and bool(draws.color.any()):  # host copy: no sync
        tiles = torch.where((color == GRAYED)[..., None, None, None], _luma(tiles), tiles)
    x = _per_channel(tiles, cfg) if cfg.per_tile in ("mean", "meanstd") else tiles.float()
    if cfg.mean_values is not None:  # integers minus integers: exact in float32
        x = x - torch.tensor(cfg.mean_values, dtype=torch.float32, device=dev)[:, None, None]
    if cfg.color == "jps":
        host = draws  # the CPU copy decides which tiles to recolour
        tile_color = torch.where(host.sub_from >= 0, host.donor_color[:, None], host.color[:, None])
        x = _recolor(x, tile_color, dev)
    if cfg.per_tile == "mvn":
        return (_mvn(x, cfg.mvn_eps) * cfg.scale).float()
    return x * cfg.scale if cfg.scale != 1.0 else x


def branch_input(images, cfg):
    """What a CFN branch saw in pretraining, for whole images fed to it as single tiles (transfer,
    probes): images (B, 3, H, W) or (3, H, W) RGB on a 0-1 scale -> BGR on a 0-255 scale with the
    recipe's values (its per-tile statistics, fixed means, MVN and scale). The recipe's colour draws
    are augmentation and are left out."""
    x = images.flip(-3) * 255.0
    if cfg.per_tile in ("mean", "meanstd"):
        x = x - x.mean((-2, -1), keepdim=True)
        if cfg.per_tile == "meanstd":
            std = x.flatten(-2).std(-1)[..., None, None]
            x = x / torch.where(std == 0, torch.ones_like(std), std)
    if cfg.mean_values is not None:
        x = x - torch.tensor(cfg.mean_values, dtype=x.dtype, device=x.device)[:, None, None]
    if cfg.per_tile == "mvn":
        return (_mvn(x, cfg.mvn_eps) * cfg.scale).to(images.dtype)
    return x * cfg.scale if cfg.scale != 1.0 else x


def unshuffle(tiles, perm):
    """Put shuffled tiles (9, ...) back in grid order: position t holds cell perm[t]."""
    out = torch.empty_like(tiles)
    out[torch.as_tensor(perm, device=tiles.device)] = tiles
    return out
