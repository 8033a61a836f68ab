"""VOC07's SVM probe: the row-space fit is the SVM on all features, the cost is chosen on trainval folds,
and informative features give a high mAP where noise gives chance."""
import warnings

import numpy as np
import torch

from transfer.lowshot import row_space
from transfer.svm import choose_cost, fit_svms, svm_layer


def _multilabel(seed, n, dims=60, classes=4, signal=3.0):
    rng = np.random.default_rng(seed)
    targets = np.where(rng.random((n, classes)) < 0.3, 1, -1)
    targets[rng.random((n, classes)) < 0.05] = 0  # difficult
    x = rng.normal(size=(n, dims))
    x[:, :classes] += signal * (targets > 0)
    return x.astype(np.float32), targets


def test_the_row_space_svm_is_the_svm_on_all_features():
    x, t = _multilabel(0, 50, dims=200)
    x, t = torch.from_numpy(x).double(), torch.from_numpy(t)  # float64: the math, not float32's stopping point
    queries = torch.randn(20, 200, dtype=torch.float64)
    tight = dict(max_iter=2000, tolerance_grad=1e-10, tolerance_change=1e-15)
    w, b = fit_svms(x, t, 1.0, **tight)
    coords, to_coords = row_space(x @ x.T)
    wr, br = fit_svms(coords.double(), t, 1.0, **tight)
    got, want = (queries @ x.T) @ to_coords.double() @ wr + br, queries @ w + b
    assert torch.allclose(got, want, atol=2e-3 * float(want.abs().max()))


def test_difficult_images_do_not_move_the_fit():
    x, t = _multilabel(1, 80)
    x, t = torch.from_numpy(x), torch.from_numpy(t)
    w, b = fit_svms(x, t, 1.0)
    moved = x.clone()
    moved[t[:, 0] == 0] += 100.0  # any features at all for the difficult ones of class 0...
    only0 = t.clone()
    only0[:, 1:] = 0  # ...and class 0 alone, so the other classes' own difficult rows do not interfere
    w0, b0 = fit_svms(x, only0, 1.0)
    w1, b1 = fit_svms(moved, only0, 1.0)
    assert torch.allclose(w0[:, 0], w1[:, 0], atol=1e-4) and torch.allclose(b0[0], b1[0], atol=1e-4)


def test_informative_features_score_high_noise_scores_chance_and_the_cost_comes_from_trainval():
    x, t = _multilabel(2, 300)
    xt, tt = _multilabel(3, 200)
    got = svm_layer(x.astype(np.float16), t, xt.astype(np.float16), tt, costs=(0.01, 1.0), folds=3)
    assert got["map"] > 0.9 and got["map_area"] > 0.9 and got["cost"] in (0.01, 1.0)
    assert set(got["cv"]) == {"0.01", "1.0"} and len(got["aps"]) == 4
    noise = svm_layer(np.random.default_rng(4).normal(size=(300, 60)).astype(np.float16), t,
                      np.random.default_rng(5).normal(size=(200, 60)).astype(np.float16), tt, costs=(0.01, 1.0))
    assert noise["map"] < 0.5  # positives are 30 %: chance AP is about that
    gram = torch.from_numpy(x @ x.T)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cost, cv = choose_cost(gram, torch.from_numpy(t), (0.01, 1.0), 3, seed=0)
    assert cost == max(cv, key=lambda c: (cv[c], -c))
