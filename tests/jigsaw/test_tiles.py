"""Puzzle making: the batched device path equals the per-image reference bit for bit."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from jigsaw.permutations import make_permutations
from jigsaw.tiles import PuzzleConfig, draw, make_puzzle_reference, make_puzzles, unshuffle

PERMS = torch.from_numpy(make_permutations(24, seed=0))


@pytest.mark.parametrize("cfg", [PuzzleConfig(), PuzzleConfig(normalize="meanstd"),
                                 PuzzleConfig(gray_prob=0.5, bgr=False)])
def test_batched_equals_reference_exactly(cfg):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (12, 256, 256, 3), dtype=torch.uint8, generator=g)
    d = draw(12, len(PERMS), (256, 256), cfg, g)
    tiles = make_puzzles(images, PERMS, d, cfg)
    assert tiles.shape == (12, 9, 3, 64, 64) and tiles.dtype == torch.float32
    for b in range(12):
        ref = make_puzzle_reference(images[b].numpy(), PERMS[d.label[b]], d.item(b), cfg)
        assert torch.equal(tiles[b], ref), b


@settings(max_examples=25, deadline=None)
@given(h=st.integers(255, 300), w=st.integers(255, 330), seed=st.integers(0, 2**31),
       train=st.booleans(), norm=st.sampled_from(["mean", "meanstd"]))
def test_batched_equals_reference_for_any_image_size(h, w, seed, train, norm):
    cfg = PuzzleConfig(normalize=norm)
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (3, h, w, 3), dtype=torch.uint8, generator=g)
    d = draw(3, len(PERMS), (h, w), cfg, g, train=train)
    assert (d.crop_y <= h - 255).all() and (d.crop_x <= w - 255).all()
    assert (d.jitter_y <= 21).all() and (d.jitter_y >= 0).all()
    tiles = make_puzzles(images, PERMS, d, cfg)
    for b in range(3):
        assert torch.equal(tiles[b], make_puzzle_reference(images[b].numpy(), PERMS[d.label[b]], d.item(b), cfg))


def test_label_recovers_the_original_tile_order():
    """Unshuffling by the labelled permutation gives the puzzle made with the identity order."""
    g = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (4, 256, 256, 3), dtype=torch.uint8, generator=g)
    d = draw(4, len(PERMS), (256, 256), PuzzleConfig(), g)
    shuffled = make_puzzles(images, PERMS, d)
    identity = torch.zeros_like(d.label)
    ordered_perms = torch.cat([PERMS, torch.arange(9)[None]])
    d_id = type(d)(d.crop_y, d.crop_x, d.jitter_y, d.jitter_x, identity + len(PERMS), d.gray)
    ordered = make_puzzles(images, ordered_perms, d_id)
    for b in range(4):
        assert torch.equal(unshuffle(shuffled[b], PERMS[d.label[b]]), ordered[b])


def test_blank_tiles_do_not_divide_by_zero():
    images = torch.full((2, 256, 256, 3), 77, dtype=torch.uint8)
    d = draw(2, len(PERMS), (256, 256), PuzzleConfig(), torch.Generator().manual_seed(0))
    tiles = make_puzzles(images, PERMS, d, PuzzleConfig(normalize="meanstd"))
    assert torch.isfinite(tiles).all() and tiles.abs().max() == 0


def test_grayscale_tiles_have_equal_channels():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 256, 256, 3), dtype=torch.uint8, generator=g)
    cfg = PuzzleConfig(gray_prob=1.0)
    tiles = make_puzzles(images, PERMS, draw(8, len(PERMS), (256, 256), cfg, g), cfg)
    assert torch.equal(tiles[:, :, 0], tiles[:, :, 1]) and torch.equal(tiles[:, :, 1], tiles[:, :, 2])


def test_images_smaller_than_the_crop_are_refused():
    with pytest.raises(ValueError, match="smaller than the 255 px crop"):
        draw(1, 4, (200, 300))
