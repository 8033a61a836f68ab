"""The fork's own net files: our exported train_vals in its form, and its originals when present.

The original train_val_cfn_jps.prototxt, train_val_cfn_jps++.prototxt and train_val_cfn_rec.prototxt
(MehdiNoroozi/JigsawPuzzleSolver, no licence to redistribute) are read from $JPS_FORK_DIR when set;
the same checks run on our own exports in every run. fc8 tolerance 1e-4 (float32 through 9 branches).
"""
import os
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from jigsaw.caffe_form import cfn_prototxt, to_caffe
from jigsaw.cfn import CFN
from jigsaw.recipes import recipe
from jigsaw.tiles import draw, make_puzzles
from tools import load_caffe_net

FORK = os.environ.get("JPS_FORK_DIR")
ORIGINALS = ["train_val_cfn_jps.prototxt", "train_val_cfn_jps++.prototxt", "train_val_cfn_rec.prototxt"]
BRANCH = ("conv1", "conv2", "conv3", "conv4", "conv5")


def _build(path_or_text, phase, weights=None, shapes=None, batch=2):
    from tools.caffe.prototxt import read_net
    net_param = read_net(path_or_text, phase=phase)
    data_layers = [lp for lp in net_param.layer if lp.type == "Data"]
    inputs = shapes or {}
    for lp in data_layers:  # small batches: the declared ones are 256 / 50
        patch = lp.transform_param.patch_size
        inputs.setdefault(lp.top[0], (batch, 3 * lp.transform_param.siamese_size, patch, patch))
        if len(lp.top) > 1:
            inputs.setdefault(lp.top[1], (batch,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_caffe_net(net_param, weights, phase=phase, input_shapes=inputs, seed=0)


def _shared_nine_ways(net):
    for name in BRANCH + ("fc6",):
        first = net.layer(f"{name}_s1").weight
        assert all(net.layer(f"{name}_s{i}").weight is first for i in range(2, 10)), name


def _own_files():
    m = CFN(24, width=0.125, seed=0)
    return {r: cfn_prototxt(m.widths, 24, "train_val", recipe=r) for r in ("jps", "jps++")}


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("which", ["jps", "jps++"])
def test_our_train_val_in_the_forks_form_builds_and_shares_one_branch(which, phase):
    net = _build(_own_files()[which], phase)
    _shared_nine_ways(net)
    inputs = {k: torch.rand(tuple(s)) * 255 if k != "label" else torch.zeros(s) for k, s in net.input_shapes.items()}
    assert torch.isfinite(net(**inputs, outputs=["loss"])["loss"]).all()
    data = [lp for lp in net.net_param.layer if lp.type == "Data"]
    tp = data[0].transform_param
    assert (tp.crop_size, tp.siamese_size, tp.patch_size, tp.hash_file) == (255, 9, 64, "permutations_24.bin")
    if which == "jps":
        assert list(tp.mean_value) == [104, 117, 123] and tp.jitter_size == 21
    else:
        assert not tp.mean_value and tp.jitter_size == 18 and len(data) == 2


def _raw(images, perms, d, cfg):
    """The Data layer's output (Transform alone: no MergeData, no MVN) for draws `d`."""
    raw = replace(cfg, substitute=0, per_tile=None, scale=1.0)
    return make_puzzles(images, perms, replace(d, sub_from=torch.full_like(d.sub_from, -1)), raw)


def _jps_pp_through_the_prototxt(train_val, tmp_path, b=4, width=0.125):
    cfg = recipe("jps++")
    cfn = CFN(24, width=width, seed=0).eval()
    to_caffe(cfn, str(tmp_path / "d.prototxt"), str(tmp_path / "w.caffemodel"))
    net = _build(train_val, "TEST", str(tmp_path / "w.caffemodel"), batch=b).eval()
    perms = torch.from_numpy(np.stack([np.random.default_rng(i).permutation(9) for i in range(24)]))
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (b, 257, 257, 3), dtype=np.uint8))
    d = draw(b, 24, (257, 257), cfg, torch.Generator().manual_seed(2))
    d.sub_from[0] = torch.tensor([-1, 4, -1, -1, 0, -1, -1, -1, -1])
    own = _raw(images, perms, d, cfg)
    grid = torch.cat([perms, torch.arange(9)[None]])     # the donor puzzle: grid order, own draws
    donor = replace(d, label=torch.full_like(d.label, 24), jitter_y=d.donor_jitter_y, jitter_x=d.donor_jitter_x,
                    shift_y=d.donor_shift_y, shift_x=d.donor_shift_x, color=d.donor_color)
    other = _raw(images, grid, donor, cfg)
    tops = [lp.top[0] for lp in net.net_param.layer if lp.type == "Data"]
    merge = next(lp.name for lp in net.net_param.layer if lp.type == "MergeData")
    net.layer(merge).plan = d.sub_from
    out = net(**{tops[0]: own.reshape(b, 27, 64, 64), tops[1]: other.reshape(b, 27, 64, 64),
                 "label": d.label.float()}, outputs=["fc8"])["fc8"]
    with torch.no_grad():
        want = cfn(make_puzzles(images, perms, d, cfg))
    return out, want


def test_jps_pp_prototxt_and_recipe_give_the_same_forward(tmp_path):
    out, want = _jps_pp_through_the_prototxt(_own_files()["jps++"], tmp_path)
    assert (out - want).abs().max() <= 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.skipif(not FORK, reason="set JPS_FORK_DIR to a folder holding the fork's train_val files")
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("name", ORIGINALS)
def test_the_forks_original_train_vals_build_and_run(name, phase):
    net = _build(os.path.join(FORK, name), phase)
    _shared_nine_ways(net)
    inputs = {k: torch.rand(tuple(s)) * 255 if k != "label" else torch.zeros(s) for k, s in net.input_shapes.items()}
    out = net(**inputs, outputs=["loss", "fc8"])
    assert torch.isfinite(out["loss"]).all() and out["fc8"].shape[1] == 1000


@pytest.mark.skipif(not FORK, reason="set JPS_FORK_DIR to a folder holding the fork's train_val files")
def test_the_forks_jps_pp_prototxt_equals_our_recipe(tmp_path):
    """The original file names its fc6 params fc6s_w (weights copy by layer name, so that is fine)
    and its fc8 has 1000 outputs: a 24-way CFN's fc8 is padded into it."""
    from tools.caffe.prototxt import read_net
    net_param = read_net(os.path.join(FORK, "train_val_cfn_jps++.prototxt"), phase="TEST")
    for lp in net_param.layer:
        if lp.name == "fc8":
            lp.inner_product_param.num_output = 24
    out, want = _jps_pp_through_the_prototxt(net_param, tmp_path, b=2, width=1.0)
    assert (out - want).abs().max() <= 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.skipif(not FORK, reason="set JPS_FORK_DIR to a folder holding the fork's permutation files")
def test_the_forks_permutation_files_drive_their_recipes():
    from jigsaw.permutations import load_permutations
    for name, n, cfg in (("permutations_100_max.bin", 100, recipe("jps")), ("permutations_701.bin", 701, recipe("jps++"))):
        perms = load_permutations(os.path.join(FORK, name))
        assert perms.shape == (n, 9) and all(sorted(p) == list(range(9)) for p in perms)
        d = draw(4, n, (257, 257), cfg, torch.Generator().manual_seed(0))
        images = torch.zeros(4, 257, 257, 3, dtype=torch.uint8)
        assert make_puzzles(images, torch.from_numpy(perms), d, cfg).shape == (4, 9, 3, 64, 64)
