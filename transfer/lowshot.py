"""Low-shot probes (Goyal et al. 2019's low-shot protocol; SimCLR's 1 % / 10 %): seeded, class-balanced
draws of a few labelled training images, a linear probe and a kNN per draw, scored on the test split.

No label outside the draw is used: the linear probe's weight decay is chosen by cross-validation inside
the draw (the validation split holds thousands of labels a low-shot user does not have), with one label
per class it cannot be chosen and is the grid's largest (the decision rule then tends to the class means).
Images without their labels are used as they are by the full-label probe: the features are standardised
(linear) or centred (kNN) with the whole training split's statistics.

At 1-5 labels per class the decay a fold of one or two images per class picks decides the linear result more
than the features do; the low-shot literature scores such budgets with a nearest-class-mean classifier
(SimpleShot, Wang et al. 2019): `prototype` here, the draw's class means of the standardised, L2-normalised
features, each test image given the class of the most similar mean (no hyperparameter, nothing chosen).

The fits run in the row space of the draw's features: an L2-regularised linear model's weights are a
combination of its training rows, so with N labelled rows of D > N features the same problem is solved
exactly on N coordinates (a Cholesky factor of the Gram matrix), at a cost set by N, not D.
"""
import numpy as np
import torch
import torch.nn.functional as F

from tools.run.errors import UserError
from tools.run.runtime import numpy_rng

from .knn import knn_accuracy, similarities, view, vote

MAX_DRAWN = 12000  # labelled images over all draws of all budgets: the Gram matrices are that square
MAX_SHARED_SIMILARITIES = 1 << 28  # test x training similarities held at once (1 GB) to serve both kNNs


def parse_budget(text):
    """'all', a number of labels per class ('10'), or a fraction of each class ('0.01' / '1%')."""
    text = str(text).strip()
    if text == "all":
        return "all"
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UserError(f"label budget '{text}': expected 'all', labels per class (10) or a fraction (0.1, 10%)") \
            from None
    if value >= 1 and value == int(value) and not text.endswith("%"):
        return int(value)
    if 0 < value < 1:
        return value
    raise UserError(f"label budget '{text}': expected 'all', a whole number of labels per class, or a fraction "
                    "between 0 and 1")


def budget_name(budget):
    return "all" if budget == "all" else str(budget) if isinstance(budget, int) else f"{100 * budget:g}%"


def draw_labelled(labels, budget, draw, seed):
    """Indices of one seeded draw: `budget` labels of each class (or that fraction of each class, at least
    one), without replacement; the same (labels, budget, draw, seed) always give the same draw."""
    labels = np.asarray(labels)
    rng = numpy_rng(seed, draw, budget) if isinstance(budget, int) else numpy_rng(seed, draw, int(budget * 1e6), 1)
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n = budget if isinstance(budget, int) else max(1, int(round(budget * len(members))))
        if n > len(members):
            raise UserError(f"{n} labels of class {c} asked for, the training split has {len(members)}; use a "
                            "smaller --labels-per-class or a larger --limit-train")
        picked.append(rng.choice(members, n, replace=False))
    return np.sort(np.concatenate(picked))


def folds_of(labels, k, seed):
    """k stratified folds (arrays of positions into `labels`): each class dealt round-robin after a shuffle."""
    rng = numpy_rng(seed, k, 7)
    fold = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        fold[rng.permutation(members)] = np.arange(len(members)) % k
    return [np.flatnonzero(fold == f) for f in range(k)]


def row_space(gram, tol=1e-6):
    """(N, r) coordinates R with R R^T = gram: its Cholesky factor, or for a singular gram (fewer features
    than rows) its eigenvectors scaled by the roots of the eigenvalues above tol x the largest. Also the
    map M with R = gram-columns @ M, which takes any rows' products with the N rows to the same
    coordinates."""
    g = gram.double()
    low, info = torch.linalg.cholesky_ex(g)
    if not info and low.diagonal().min() ** 2 > tol * g.diagonal().max():
        return low.float(), torch.linalg.solve_triangular(low, torch.eye(len(g), dtype=g.dtype), upper=False).T.float()
    vals, vecs = torch.linalg.eigh(g)  # singular or nearly: only the directions the rows span
    keep = vals > tol * vals.max().clamp_min(1e-30)
    vecs, roots = vecs[:, keep], vals[keep].sqrt()
    return (vecs * roots).float(), (vecs / roots).float()


def fit_linear(x, outputs, data_loss, l2, init=None, max_iter=200, tolerance_grad=1e-6, tolerance_change=1e-10):
    """(W, b) minimising data_loss(x @ W + b) + l2/2 |W|^2 (biases free) by full-batch L-BFGS from `init` or
    zeros; the default tolerances stop it at convergence. `x` (N, D), or a stack (B, N, D) of independent
    problems solved as one (the sum of their objectives, whose minimum is each one's; W (B, D, out), b
    (B, 1, out)), `l2` then a number or one per problem (B, 1, 1)."""
    lead = tuple(x.shape[:-2])
    w = torch.zeros(*lead, x.shape[-1], outputs, dtype=x.dtype) if init is None else init[0].clone()
    b = torch.zeros(*lead, *((1,) if lead else ()), outputs, dtype=x.dtype) if init is None else init[1].clone()
    w.requires_grad_()
    b.requires_grad_()
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, history_size=20, tolerance_grad=tolerance_grad,
                            tolerance_change=tolerance_change, line_search_fn="strong_wolfe")

    def closure():
        # the gradient by hand: autograd's x.T @ dz reads x transposed, 5x slower than (dz.T @ x).T on the CPU
        wd, bd = w.detach(), b.detach()
        z = (x @ wd + bd).requires_grad_()
        loss = data_loss(z)
        dz, = torch.autograd.grad(loss, z)
        w.grad = (dz.mT @ x).mT.contiguous() + l2 * wd
        b.grad = dz.sum(-2, keepdim=bool(lead))
        return loss.detach() + 0.5 * (l2 * wd * wd).sum()
    opt.step(closure)
    return w.detach(), b.detach()


def fit_softmax(x, y, n_classes, weight_decay, init=None, **kw):
    """Multinomial logistic regression: mean cross-entropy plus weight_decay/2 |W|^2. Returns (W, b). A stack
    of problems (x (B, N, D), y (B, N)) is fit at once, as fit_linear does."""
    if x.dim() == 2:
        return fit_linear(x, n_classes, lambda z: F.cross_entropy(z, y), weight_decay, init, **kw)
    return fit_linear(x, n_classes, lambda z: F.cross_entropy(z.reshape(-1, n_classes), y.reshape(-1),
                                                              reduction="sum") / y.shape[-1], weight_decay, init, **kw)


def _path(x, y, n_classes, decays):
    """One fit per weight decay, largest first, each started from the previous one's solution."""
    fits, init = {}, None
    for wd in sorted(decays, reverse=True):
        fits[wd] = init = fit_softmax(x, y, n_classes, wd, init)
    return fits


def stacked_row_space(grams):
    """row_space of each of B Gram matrices (B, N, N), stacked: (B, N, r) coordinates and maps, zero-padded
    to the largest rank (a zero coordinate gets a zero weight: the fits are unchanged)."""
    parts = [row_space(g) for g in grams]
    r = max(c.shape[1] for c, _ in parts)
    pad = [(F.pad(c, (0, r - c.shape[1])), F.pad(m, (0, r - m.shape[1]))) for c, m in parts]
    return torch.stack([c for c, _ in pad]), torch.stack([m for _, m in pad])


def choose_decays(grams, ys, n_classes, decays, folds, seeds):
    """For each of B draws of one budget (grams (B, N, N), labels (B, N)): the weight decay with the most
    correct held-out predictions over `folds` stratified folds of that draw (ties: the larger decay); the
    largest when a class has a single label. The B draws' fits run as one stacked problem."""
    per_class = [np.bincount(y.numpy(), minlength=n_classes) for y in ys]
    k = min(folds, min(int(c[c > 0].min()) for c in per_class))
    if k < 2:
        return [max(decays)] * len(ys)
    splits = [folds_of(y.numpy(), k, seed) for y, seed in zip(ys, seeds)]
    if any(len(s[f]) != len(splits[0][f]) for s in splits for f in range(k)):  # unequal folds: one at a time
        return [choose_decays(g[None], y[None], n_classes, decays, folds, [seed])[0]
                for g, y, seed in zip(grams, ys, seeds)]
    correct = torch.zeros(len(ys), len(decays), dtype=torch.long)
    for f in range(k):
        held = [s[f] for s in splits]
        kept = [np.setdiff1d(np.arange(ys.shape[1]), h) for h in held]
        coords, to_coords = stacked_row_space([g[kp][:, kp] for g, kp in zip(grams, kept)])
        held_x = torch.stack([g[h][:, kp] for g, h, kp in zip(grams, held, kept)]) @ to_coords
        y_kept = torch.stack([y[kp] for y, kp in zip(ys, kept)])
        y_held = torch.stack([y[h] for y, h in zip(ys, held)])
        for wd, (w, b) in _path(coords, y_kept, n_classes, decays).items():
            correct[:, decays.index(wd)] += ((held_x @ w + b).argmax(-1) == y_held).sum(-1)
    return [max(decays, key=lambda wd: (int(c[decays.index(wd)]), wd)) for c in correct]


def choose_decay(gram, y, n_classes, decays, folds, seed):
    """choose_decays for a single draw."""
    return choose_decays(gram[None], y[None], n_classes, list(decays), folds, [seed])[0]


def _knn_similarities(full, train_labels, test, test_labels, union, n_classes, k, temperature, features, full_knn):
    """(the test images' cosines to the drawn images `union`, in the view `features` of the whole training
    split's statistics; the kNN accuracy with the whole split as the bank when `full_knn`, else None): one
    similarity matrix serves both where it fits in memory."""
    to_unit = view(full, features)  # the whole training split's statistics, as the linear probe's
    unit_test = to_unit(test)
    every = None
    if full_knn and len(full) * len(unit_test) <= MAX_SHARED_SIMILARITIES:
        knn_sim = similarities(unit_test, to_unit(full))
        bank_labels = torch.from_numpy(train_labels)
        every = float((vote(knn_sim, bank_labels, n_classes, k, temperature) == test_labels).double().mean())
        return knn_sim[:, torch.from_numpy(union)], every
    if full_knn:  # too large to hold: the whole-bank vote in chunks of its own
        every = knn_accuracy(full, train_labels, test, test_labels, n_classes, k, temperature, features)
    return similarities(unit_test, to_unit(full[union])), every


def lowshot_layer(train, train_labels, test, test_labels, n_classes, budgets, draws, seed, decays, folds=3,
                  k=20, temperature=0.07, features="centred", full_knn=False):
    """{budget name: [per draw {linear, weight_decay, knn, labels}]} for one layer's cached features; with
    `full_knn`, also the kNN accuracy with the whole training split as the bank (one similarity matrix then
    serves both), else None."""
    train_labels = np.array(train_labels, dtype=np.int64)
    test_labels = torch.from_numpy(np.array(test_labels, dtype=np.int64))
    picks = {(b, d): draw_labelled(train_labels, b, d, seed) for b in budgets for d in range(draws)}
    union = np.unique(np.concatenate(list(picks.values()))) if picks else np.zeros(0, np.int64)
    if len(union) > MAX_DRAWN:
        raise UserError(f"the low-shot draws hold {len(union)} distinct labelled images, at most {MAX_DRAWN}: use "
                        "fewer --draws or smaller budgets ('all' is the full-label probe)")
    where = {int(i): j for j, i in enumerate(union)}
    full = np.asarray(train, dtype=np.float32)
    mean, std = full.mean(0), full.std(0, ddof=1).clip(1e-6)
    drawn = torch.from_numpy((full[union] - mean) / std)
    std_test = torch.from_numpy((np.asarray(test, dtype=np.float32) - mean) / std)
    gram = drawn @ drawn.T
    knn_sim, every = _knn_similarities(full, train_labels, test, test_labels, union, n_classes, k, temperature,
                                       features, full_knn)
    del full
    y_all = torch.as_tensor(train_labels[union], dtype=torch.long)
    out, decays = {}, list(decays)
    for budget in budgets:
        pos = [torch.as_tensor([where[int(i)] for i in picks[(budget, d)]]) for d in range(draws)]
        if len({len(p) for p in pos}) > 1:  # never for class-balanced draws; one stack per size if it were
            raise AssertionError("the draws of one budget differ in size")
        grams, ys = torch.stack([gram[p][:, p] for p in pos]), torch.stack([y_all[p] for p in pos])
        wds = choose_decays(grams, ys, n_classes, decays, folds, [seed + d for d in range(draws)])
        coords, to_coords = stacked_row_space(grams)
        ws, bs = fit_softmax(coords, ys, n_classes, torch.tensor(wds, dtype=coords.dtype)[:, None, None])
        for d, p in enumerate(pos):
            weights = drawn[p].T @ (to_coords[d] @ ws[d])  # the fit as weights of the standardised features
            linear = float(((std_test @ weights + bs[d]).argmax(1) == test_labels).double().mean())
            knn = float((vote(knn_sim[:, p], ys[d], n_classes, k, temperature) == test_labels).double().mean())
            out.setdefault(budget_name(budget), []).append(dict(draw=d, labels=len(p), linear=linear,
                                                                weight_decay=wds[d], knn=knn,
                                                                prototype=prototype_accuracy(
                                                                    drawn[p], ys[d], std_test, test_labels,
                                                                    n_classes)))
    return out, every


def prototype_accuracy(train, labels, test, test_labels, n_classes):
    """Nearest class mean (SimpleShot): standardised features L2-normalised, each class's mean of the labelled
    ones, a test image's class the most cosine-similar mean (a class without labels is never predicted)."""
    unit, unit_test = F.normalize(train, dim=1), F.normalize(test, dim=1)
    counts = torch.bincount(labels, minlength=n_classes)
    means = torch.zeros(n_classes, unit.shape[1], dtype=unit.dtype).index_add_(0, labels, unit)
    sims = F.normalize(means, dim=1) @ unit_test.T
    sims[counts == 0] = -float("inf")
    return float((sims.argmax(0) == test_labels).double().mean())
