"""VOC07's frozen-feature benchmark (Goyal et al. 2019): per class an L2-regularised squared-hinge linear
SVM on one layer's features, its cost chosen by cross-validation on trainval (mean AP over held-out folds),
then VOC07 AP per class on test and their mean. Difficult images (target 0) are left out of training and
of every AP.

The fits run exactly in the training rows' span, as the low-shot probes do (lowshot.row_space), all 20
classes at once (their problems are independent, so the joint minimum is each one's minimum).
"""
import numpy as np
import torch

from tools.run.runtime import numpy_rng

from .lowshot import fit_linear, row_space
from .voc07 import mean_ap

COSTS = (0.01, 0.1, 1.0, 10.0, 100.0)


def fit_svms(x, targets, cost, init=None, max_iter=300, tolerance_grad=1e-5, tolerance_change=1e-9):
    """(W, b) minimising, for each class c, |w_c|^2 / 2 + cost * sum_i (1 - y_ic (x_i w_c + b_c))_+^2 over
    the images whose target is not 0 (divided by cost x N, which moves no minimum). The default tolerances
    are what float32 reaches; a weakly regularised, separable problem may stop at max_iter near its minimum."""
    y = targets.to(x.dtype)
    mask = (targets != 0).to(x.dtype)
    n = len(x)

    def squared_hinge(scores):
        margin = (1 - y * scores).clamp_min(0)
        return (mask * margin * margin).sum() / n
    return fit_linear(x, y.shape[1], squared_hinge, 1 / (cost * n), init, max_iter, tolerance_grad, tolerance_change)


def _folds(n, k, seed):
    order = numpy_rng(seed, k, 11).permutation(n)
    return [np.sort(order[f::k]) for f in range(k)]


def choose_cost(gram, targets, costs=COSTS, folds=3, seed=0):
    """The cost with the best mean AP over `folds` held-out folds of trainval (ties: the smaller cost);
    also {cost: that mean AP}."""
    scores = dict.fromkeys(costs, 0.0)
    if len(costs) == 1:
        return costs[0], scores  # nothing to choose
    for held in _folds(len(targets), folds, seed):
        kept = np.setdiff1d(np.arange(len(targets)), held)
        coords, to_coords = row_space(gram[kept][:, kept])
        held_x = gram[held][:, kept] @ to_coords
        init = None
        for cost in sorted(costs):  # each fit starts from the last (more regularised) one
            init = fit_svms(coords, targets[kept], cost, init)
            got = mean_ap((held_x @ init[0] + init[1]).numpy(), targets[held].numpy())[0]
            scores[cost] += 0.0 if np.isnan(got) else got / folds  # a fold without any positive says nothing
    return max(costs, key=lambda c: (scores[c], -c)), scores


def svm_layer(train, train_targets, test, test_targets, costs=COSTS, folds=3, seed=0):
    """VOC07 mAP (11-point; and the area under the curve) on test, the cost chosen on trainval, per-class APs."""
    full = np.asarray(train, dtype=np.float32)
    mean, std = full.mean(0), full.std(0, ddof=1).clip(1e-6)
    z = torch.from_numpy((full - mean) / std)
    cross = torch.from_numpy((np.asarray(test, dtype=np.float32) - mean) / std) @ z.T
    gram = z @ z.T
    del full, z
    targets = torch.from_numpy(np.array(train_targets, dtype=np.int64))
    cost, cv = choose_cost(gram, targets, costs, folds, seed)
    coords, to_coords = row_space(gram)
    w, b = fit_svms(coords, targets, cost)
    scores = (cross @ to_coords @ w + b).numpy()
    test_targets = np.asarray(test_targets)
    m, aps = mean_ap(scores, test_targets)
    return dict(map=m, map_area=mean_ap(scores, test_targets, eleven_point=False)[0], cost=cost,
                cv={str(c): v for c, v in cv.items()}, aps=[None if np.isnan(a) else a for a in aps])
