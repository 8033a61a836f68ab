"""Puzzle making: the batched device path equals a per-image reference (paper, bbrattoli) bit for bit,
tiles come back in order under their label, and blank tiles stay finite in every recipe."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from jigsaw.permutations import make_permutations
from jigsaw.recipes import recipe
from jigsaw.tiles import GRAYED, draw, make_puzzles, unshuffle

PERMS = torch.from_numpy(make_permutations(24, seed=0))


def _reference(image, perm, d, cfg):
    """One puzzle the plain way: crop, cut the cell at each position, luma gray, BGR, per-channel
    statistics in float64 (rounded as the batched path rounds them)."""
    img = image[int(d.crop_y):int(d.crop_y) + cfg.crop, int(d.crop_x):int(d.crop_x) + cfg.crop].astype(np.int64)
    if int(d.color) == GRAYED:
        luma = (img[..., 0] * 299 + img[..., 1] * 587 + img[..., 2] * 114 + 500) // 1000
        img = np.repeat(luma[..., None], 3, axis=-1)
    tiles = []
    for t in range(9):
        r, q = divmod(int(perm[t]), 3)
        y, x = r * cfg.cell + int(d.jitter_y[t]), q * cfg.cell + int(d.jitter_x[t])
        tile = img[y:y + cfg.tile, x:x + cfg.tile, ::-1].transpose(2, 0, 1)
        n = cfg.tile * cfg.tile
        s = tile.reshape(3, -1).sum(1)
        out = tile.astype(np.float32) - (s / n).astype(np.float32)[:, None, None]
        if cfg.per_tile == "meanstd":
            var = ((tile.reshape(3, -1) ** 2).sum(1) - s * s / n) / (n - 1)
            std = np.sqrt(np.maximum(var, 0)).astype(np.float32)
            out = out / np.where(std == 0, 1, std)[:, None, None]
        tiles.append(out)
    return torch.from_numpy(np.stack(tiles))


@pytest.mark.parametrize("cfg", [recipe("paper"), recipe("bbrattoli"), recipe("paper", gray_prob=0.5)])
def test_batched_equals_reference_exactly(cfg):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (12, 256, 256, 3), dtype=torch.uint8, generator=g)
    d = draw(12, len(PERMS), (256, 256), cfg, g)
    tiles = make_puzzles(images, PERMS, d, cfg)
    assert tiles.shape == (12, 9, 3, 64, 64) and tiles.dtype == torch.float32
    for b in range(12):
        assert torch.equal(tiles[b], _reference(images[b].numpy(), PERMS[d.label[b]], d.item(b), cfg)), b


@settings(max_examples=25, deadline=None)
@given(h=st.integers(255, 300), w=st.integers(255, 330), seed=st.integers(0, 2**31),
       train=st.booleans(), name=st.sampled_from(["paper", "bbrattoli"]))
def test_batched_equals_reference_for_any_image_size(h, w, seed, train, name):
    cfg = recipe(name)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (3, h, w, 3), dtype=torch.uint8, generator=g)
    d = draw(3, len(PERMS), (h, w), cfg, g, train=train)
    assert (d.crop_y <= h - 255).all() and (d.crop_x <= w - 255).all()
    assert (d.jitter_y <= 21).all() and (d.jitter_y >= 0).all()
    tiles = make_puzzles(images, PERMS, d, cfg)
    for b in range(3):
        assert torch.equal(tiles[b], _reference(images[b].numpy(), PERMS[d.label[b]], d.item(b), cfg))


@pytest.mark.parametrize("name", ["paper", "jps"])
def test_label_recovers_the_original_tile_order(name):
    """Unshuffling by the labelled permutation gives the puzzle made with the identity order, when
    each cell keeps its draws (per-position draws follow the cell shown there)."""
    cfg = recipe(name)
    side = cfg.min_image()
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (4, side, side, 3), dtype=torch.uint8, generator=g)
    d = draw(4, len(PERMS), (side, side), cfg, g)
    shuffled = make_puzzles(images, PERMS, d, cfg)
    ordered_perms = torch.cat([PERMS, torch.arange(9)[None]])
    by_cell = {}
    for f in ("jitter_y", "jitter_x", "shift_y", "shift_x"):
        per_pos = getattr(d, f)
        per_cell = torch.empty_like(per_pos)
        for b in range(4):
            per_cell[b, PERMS[d.label[b]]] = per_pos[b]
        by_cell[f] = per_cell
    d_id = replace(d, label=torch.full_like(d.label, len(PERMS)), **by_cell)
    ordered = make_puzzles(images, ordered_perms, d_id, cfg)
    for b in range(4):
        assert torch.equal(unshuffle(shuffled[b], PERMS[d.label[b]]), ordered[b])


@pytest.mark.parametrize("name", ["bbrattoli", "paper", "jps", "jps++"])
def test_blank_tiles_do_not_divide_by_zero(name):
    cfg = recipe(name)
    side = cfg.min_image()
    images = torch.full((2, side, side, 3), 77, dtype=torch.uint8)
    tiles = make_puzzles(images, PERMS, draw(2, len(PERMS), (side, side), cfg, torch.Generator().manual_seed(0)), cfg)
    assert torch.isfinite(tiles).all()
    if cfg.per_tile:
        assert tiles.abs().max() == 0


@pytest.mark.parametrize("level", [1, 77, 200])
def test_jps_plus_plus_gives_a_uniform_tile_zero_where_the_forks_float32_gives_plus_or_minus_50(level):
    """The choice README's jps++ section states: a constant tile, gray or projected (non-integer values:
    the fork's 0.3333 weights), is centred exactly, so MVN x50 gives 0. The fork's Caffe sums the mean in
    float32 through its BLAS and keeps the rounding residue, which MVN scales to +-50 (measured against the
    real Caffe: 253 of the 256 grey levels; its sign depends on the BLAS's order)."""
    from jigsaw.tiles import PROJECTED
    cfg = recipe("jps++")
    side = cfg.min_image()
    images = torch.full((16, side, side, 3), level, dtype=torch.uint8)
    d = draw(16, len(PERMS), (side, side), cfg, torch.Generator().manual_seed(level))
    assert (d.color == GRAYED).any() and (d.color == PROJECTED).any()
    assert torch.equal(make_puzzles(images, PERMS, d, cfg), torch.zeros(16, 9, 3, cfg.tile, cfg.tile))


def test_grayscale_tiles_have_equal_channels():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 256, 256, 3), dtype=torch.uint8, generator=g)
    cfg = recipe("paper", gray_prob=1.0)
    tiles = make_puzzles(images, PERMS, draw(8, len(PERMS), (256, 256), cfg, g), cfg)
    assert torch.equal(tiles[:, :, 0], tiles[:, :, 1]) and torch.equal(tiles[:, :, 1], tiles[:, :, 2])


def test_images_smaller_than_the_crop_are_refused():
    with pytest.raises(ValueError, match="smaller than the 255 px"):
        draw(1, 4, (200, 300), recipe("paper"))
