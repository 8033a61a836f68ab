"""PIRL's two views of a batch of uint8 images, drawn on the images' device in a few batched calls
(VISSL's `ImgPilToPatchesAndImage` + ColorJitter + RandomGrayscale + RandomHorizontalFlip + Normalize):
the image, a random resized crop (scale 0.08-1, aspect 3/4-4/3) to `image_size`; the tiles, a random resized
crop (scale 0.6-1) to a 3 x `cell` px square, cut in 3 x 3 cells, a `tile` px square at a random offset in each,
each tile with its own flip, colour jitter (brightness, contrast, saturation 0.4; hue 0.2) and gray (p 0.2),
the nine in a random one of the 9! orders. RGB, then ImageNet's mean and standard deviation.

Differences from VISSL, said once: bilinear sampling of the crops by `grid_sample` (not PIL's resize), the
jitter's four factors in a fixed order (torchvision draws the order), hue turned in YIQ space, and VISSL's
`ImgPilRandomPhotometric` (a random PIL enhancement) left out."""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)
GRAY_P = 0.2
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ViewConfig:
    image_size: int = 64
    cell: int = 85        # the tiles' crop is 3 x cell px (VISSL: 255)
    tile: int = 64
    image_scale: tuple = (0.08, 1.0)
    tile_scale: tuple = (0.6, 1.0)


def _boxes(n, h, w, scale, g):
    """Random resized crop boxes (torchvision's rule, one try, then the whole image): (n, 4) y0, x0, ch, cw."""
    area = h * w * torch.empty(n).uniform_(*scale, generator=g)
    log_r = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=g)
    ratio = log_r.exp()
    cw = (area * ratio).sqrt().round().clamp(1, w)
    ch = (area / ratio).sqrt().round().clamp(1, h)
    y0 = (torch.rand(n, generator=g) * (h - ch + 1)).floor()
    x0 = (torch.rand(n, generator=g) * (w - cw + 1)).floor()
    return torch.stack([y0, x0, ch, cw], 1)


def _grid(boxes, h, w, out_h, out_w, flip):
    """Sampling grids (n, out_h, out_w, 2) of align_corners=False coordinates for crops `boxes` (pixels)."""
    y0, x0, ch, cw = boxes.unbind(1)
    ys = (torch.arange(out_h) + 0.5) / out_h          # centres of output pixels, 0-1 of the box
    xs = (torch.arange(out_w) + 0.5) / out_w
    xs = torch.where(flip[:, None], 1 - xs[None], xs[None])
    py = y0[:, None] + ys[None] * ch[:, None]          # pixels of the image
    px = x0[:, None] + xs * cw[:, None]
    gy = (2 * py / h - 1)[:, :, None].expand(-1, -1, out_w)
    gx = (2 * px / w - 1)[:, None, :].expand(-1, out_h, -1)
    return torch.stack([gx, gy], -1)


def _jitter(x, g):
    """Colour jitter and gray on (n, 3, H, W) RGB 0-1, each sample its own factors."""
    n, dev = x.shape[0], x.device
    f = lambda s: torch.empty(n).uniform_(1 - s, 1 + s, generator=g).to(dev)[:, None, None, None]  # noqa: E731
    luma = torch.tensor(LUMA, device=dev)[None, :, None, None]
    x = (x * f(JITTER["brightness"])).clamp(0, 1)
    gray = (x * luma).sum(1, keepdim=True)
    x = ((x - gray.mean((2, 3), keepdim=True)) * f(JITTER["contrast"]) + gray.mean((2, 3), keepdim=True)).clamp(0, 1)
    gray = (x * luma).sum(1, keepdim=True)
    x = ((x - gray) * f(JITTER["saturation"]) + gray).clamp(0, 1)
    angle = (torch.empty(n).uniform_(-JITTER["hue"], JITTER["hue"], generator=g) * 2 * math.pi).to(dev)
    x = _turn_hue(x, angle)
    to_gray = (torch.rand(n, generator=g) < GRAY_P).to(dev)[:, None, None, None]
    return torch.where(to_gray, (x * luma).sum(1, keepdim=True).expand_as(x), x)


def _turn_hue(x, angle):
    """Rotate chroma by `angle` (n,) radians in YIQ space."""
    rgb2yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=x.device)
    yiq = torch.einsum("ij,njhw->nihw", rgb2yiq, x)
    c, s = angle.cos()[:, None, None], angle.sin()[:, None, None]
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], c * i - s * q, s * i + c * q], 1)
    return torch.einsum("ij,njhw->nihw", torch.linalg.inv(rgb2yiq), yiq).clamp(0, 1)


def _normalise(x):
    mean = torch.tensor(MEAN, device=x.device)[:, None, None]
    std = torch.tensor(STD, device=x.device)[:, None, None]
    return (x - mean) / std


def normalise_rgb01(x):
    """What a PIRL trunk sees of (N, 3, H, W) RGB 0-1 images outside training (transfer, the monitor)."""
    return _normalise(x)


def pirl_views(images, cfg: ViewConfig, g: torch.Generator):
    """images (B, H, W, 3) uint8 RGB -> (image view (B, 3, S, S), tiles (B, 9, 3, T, T)), float32 on their device;
    every draw from `g` (CPU)."""
    b, h, w = images.shape[:3]
    dev = images.device
    x = images.permute(0, 3, 1, 2).float() / 255
    flip = torch.rand(b, generator=g) < 0.5
    grid = _grid(_boxes(b, h, w, cfg.image_scale, g), h, w, cfg.image_size, cfg.image_size, flip)
    image = F.grid_sample(x, grid.to(dev), mode="bilinear", padding_mode="border", align_corners=False)
    image = _normalise(_jitter(image, g))
    # tiles: their crop box, then per tile a sub-box of it (cell + offset), flipped or not, sampled in one call
    side, t, c = 3 * cfg.cell, cfg.tile, cfg.cell
    crop = _boxes(b, h, w, cfg.tile_scale, g)
    off = torch.randint(0, c - t + 1, (b, 9, 2), generator=g).float()
    cells = torch.arange(9)
    top = (cells // 3 * c)[None] + off[..., 0]             # (B, 9) in the side x side crop's pixels
    left = (cells % 3 * c)[None] + off[..., 1]
    k = crop[:, None, 2:] / side                            # (B, 1, 2) image px per crop px
    boxes = torch.stack([crop[:, None, 0] + top * k[..., 0], crop[:, None, 1] + left * k[..., 1],
                         t * k[..., 0].expand(-1, 9), t * k[..., 1].expand(-1, 9)], -1).reshape(b * 9, 4)
    grid = _grid(boxes, h, w, t, t, torch.rand(b * 9, generator=g) < 0.5).reshape(b, 9 * t, t, 2)
    tiles = F.grid_sample(x, grid.to(dev), mode="bilinear", padding_mode="border", align_corners=False)
    tiles = tiles.reshape(b, 3, 9, t, t).transpose(1, 2).reshape(b * 9, 3, t, t)
    tiles = _normalise(_jitter(tiles, g)).reshape(b, 9, 3, t, t)
    order = torch.rand(b, 9, generator=g).argsort(1).to(dev)   # any of the 9! orders
    return image, tiles.gather(1, order[:, :, None, None, None].expand_as(tiles))
