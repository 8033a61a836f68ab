"""Recipes against a float64 transcription of the fork's C++ (fork_reference.py), fed the same draws."""
import numpy as np
import pytest
import torch

from jigsaw.recipes import RECIPES, RECORD_OPTIONS, recipe, recipe_of, recipe_record
from jigsaw.tiles import GRAYED, NONE, PROJECTED, draw, make_puzzles
from tools.run.errors import UserError

from .fork_reference import datum_from_rgb, merge_data, mvn_across, transform

PERMS = torch.from_numpy(np.stack([np.random.default_rng(i).permutation(9) for i in range(30)]))
JPS_MEANS = (104, 117, 123)


def _images(b, side=257, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (b, side, side, 3), dtype=np.uint8))


def _fork_puzzle(image, d, b, perm, mean_values, donor=False):
    """The fork's Transform of one datum with the draws of puzzle b (or of its donor puzzle)."""
    pre = "donor_" if donor else ""
    color = int(getattr(d, pre + "color")[b])
    return transform(datum_from_rgb(image), 255, 64,
                     getattr(d, pre + "jitter_x")[b].numpy(), getattr(d, pre + "jitter_y")[b].numpy(),
                     getattr(d, pre + "shift_x")[b].numpy(), getattr(d, pre + "shift_y")[b].numpy(),
                     make_gray=color == GRAYED, color_proj=color == PROJECTED,
                     hash_row=None if donor else perm, mean_values=mean_values)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jps_equals_the_forks_transform_exactly(seed):
    cfg = recipe("jps")
    images = _images(6, seed=seed)
    d = draw(6, len(PERMS), (257, 257), cfg, torch.Generator().manual_seed(seed))
    d.color[:3] = torch.tensor([NONE, GRAYED, PROJECTED])  # every colour branch, whatever the draw
    tiles = make_puzzles(images, PERMS, d, cfg)
    for b in range(6):
        want = _fork_puzzle(images[b].numpy(), d, b, PERMS[d.label[b]].numpy(), JPS_MEANS)
        assert np.array_equal(tiles[b].reshape(27, 64, 64).numpy(), want), b


@pytest.mark.parametrize("donor", ["same", "other"])
def test_jps_plus_plus_equals_transform_mergedata_mvn_x50(donor):
    cfg = recipe("jps++", donor=donor)
    images = _images(8, seed=3)
    d = draw(8, len(PERMS), (257, 257), cfg, torch.Generator().manual_seed(5))
    d.sub_from[0] = torch.tensor([-1, 4, -1, -1, 0, -1, -1, -1, -1])  # two swaps, whatever the draw
    assert (d.sub_from >= 0).sum(1).max() <= 2
    tiles = make_puzzles(images, PERMS, d, cfg)
    for b in range(8):
        own = _fork_puzzle(images[b].numpy(), d, b, PERMS[d.label[b]].numpy(), None).reshape(9, 3, 64, 64)
        donor_image = images[(b + int(d.donor_offset[b])) % 8].numpy()
        other = _fork_puzzle(donor_image, d, b, None, None, donor=True).reshape(9, 3, 64, 64)
        merged = merge_data(own, other, d.sub_from[b].tolist())
        want = np.stack([mvn_across(t) * 50 for t in merged])
        got = tiles[b].double().numpy()
        assert np.all(np.abs(got - want) <= 1e-5 * np.maximum(1, np.abs(want))), b  # float32 output
    if donor == "same":
        assert d.donor_offset.eq(0).all()
    else:
        assert d.donor_offset.ne(0).all()


def test_colour_fractions_and_channel_shifts_over_10000_puzzles():
    """The tiles realise their colour draw (checked on 1,000 puzzles: gray tiles have three equal
    channels, untouched ones are integers, uint8 minus integer means; projected ones are neither),
    and over 10,000 puzzles the draws have the fork's fractions."""
    cfg = recipe("jps")
    g = torch.Generator().manual_seed(0)
    images = _images(250, seed=9)
    kinds = []
    for k in range(40):
        d = draw(250, len(PERMS), (257, 257), cfg, g)
        if k < 4:
            t = make_puzzles(images, PERMS, d, cfg)[:, 0]                 # first tile of each puzzle
            gray = (t[:, 0] == t[:, 1]).all((1, 2)) & (t[:, 1] == t[:, 2]).all((1, 2))
            whole = (t == t.round()).all((1, 2, 3))
            assert torch.equal(torch.where(gray, GRAYED, torch.where(whole, NONE, PROJECTED)), d.color)
        kinds.append(d.color)
    kinds = torch.cat(kinds)
    n = len(kinds)
    assert n == 10000
    for code, p in ((GRAYED, 0.5), (PROJECTED, 0.25), (NONE, 0.25)):
        se = (p * (1 - p) / n) ** 0.5
        assert abs((kinds == code).float().mean().item() - p) < 3 * se, code
    d = draw(10000, len(PERMS), (257, 257), cfg, g)
    for shifts in (d.shift_x, d.shift_y):
        values = shifts.flatten()
        assert set(values.unique().tolist()) == {0, 1, 2}
        se = (1 / 3 * 2 / 3 / len(values)) ** 0.5
        for v in range(3):
            assert abs((values == v).float().mean().item() - 1 / 3) < 3 * se
    assert set(d.jitter_x.unique().tolist()) == set(range(22))


def test_mergedata_draws_follow_the_fork():
    cfg = recipe("jps++")
    d = draw(6000, 701, (257, 257), cfg, torch.Generator().manual_seed(1))
    counts = (d.sub_from >= 0).sum(1)
    se = (1 / 3 * 2 / 3 / 6000) ** 0.5
    for k in range(3):  # rand() % 3 substitutions
        assert abs((counts == k).float().mean().item() - 1 / 3) < 3 * se
    for row in d.sub_from[counts == 2][:200]:
        src = row[row >= 0]
        assert len(set(src.tolist())) == len(src)  # distinct source positions


def test_paper_recipe_is_per_tile_mean_of_a_random_crop():
    cfg = recipe("paper")
    images = _images(4, side=256, seed=4)
    d = draw(4, len(PERMS), (256, 256), cfg, torch.Generator().manual_seed(0))
    tiles = make_puzzles(images, PERMS, d, cfg)
    for b in range(4):
        img, perm = images[b].numpy().astype(np.float64), PERMS[d.label[b]]
        for t in range(9):
            cell = int(perm[t])
            y = int(d.crop_y[b]) + (cell // 3) * 85 + int(d.jitter_y[b, t])
            x = int(d.crop_x[b]) + (cell % 3) * 85 + int(d.jitter_x[b, t])
            tile = img[y:y + 64, x:x + 64, ::-1].transpose(2, 0, 1)
            want = tile - tile.mean(axis=(1, 2), keepdims=True)
            assert np.abs(tiles[b, t].numpy() - want).max() < 1e-4


def test_recipes_record_themselves_and_refuse_what_they_do_not_have():
    assert set(RECIPES) == {"jps", "jps++", "paper", "bbrattoli"}
    cfg, record = recipe_record("jps++", donor="other")
    assert record == dict(recipe="jps++", recipe_options={"donor": "other"}) and cfg.donor == "other"
    assert recipe_of(record) == cfg
    every = {**recipe_record("paper", gray_prob=0.3, cell=42, tile=32)[1]["recipe_options"], **record["recipe_options"]}
    assert sorted(every) == sorted(RECORD_OPTIONS)  # what a train_val header may say (jigsaw/caffe_recipe.py)
    assert recipe_of({"normalize": "meanstd"}).recipe == "bbrattoli"  # runs from before recipes
    with pytest.raises(UserError, match="unknown recipe 'jsp'; did you mean 'jps'"):
        recipe("jsp")
    with pytest.raises(UserError, match="--gray-prob applies"):
        recipe_record("jps", gray_prob=0.3)
    with pytest.raises(UserError, match="--donor applies"):
        recipe_record("jps", donor="other")
    with pytest.raises(ValueError, match="smaller than the 257 px"):
        draw(1, 4, (255, 255), recipe("jps"))
