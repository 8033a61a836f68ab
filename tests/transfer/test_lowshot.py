"""Low-shot probes: the labelled draws (balanced, seeded, inside the training split), the row-space fit
(the same classifier as the fit on all features), and the weight decay chosen inside the draw only."""
import numpy as np
import pytest
import torch

from tools.run.errors import UserError
from transfer.knn import knn_accuracy
from transfer.lowshot import (choose_decay, choose_decays, draw_labelled, fit_linear, fit_softmax, folds_of,
                              lowshot_layer, parse_budget, row_space, stacked_row_space)


def test_draws_are_balanced_seeded_and_without_repeats():
    labels = np.repeat(np.arange(5), [30, 40, 50, 60, 70])
    a = draw_labelled(labels, 10, draw=0, seed=3)
    assert np.bincount(labels[a]).tolist() == [10] * 5 and len(set(a)) == len(a)
    assert np.array_equal(a, draw_labelled(labels, 10, draw=0, seed=3))  # the same seed, the same draw
    assert not np.array_equal(a, draw_labelled(labels, 10, draw=1, seed=3))  # another draw, other images
    assert not np.array_equal(a, draw_labelled(labels, 10, draw=0, seed=4))
    f = draw_labelled(labels, 0.1, draw=0, seed=3)  # a fraction of each class, at least one
    assert np.bincount(labels[f]).tolist() == [3, 4, 5, 6, 7]
    with pytest.raises(UserError, match="has 30"):
        draw_labelled(labels, 31, draw=0, seed=0)


@pytest.mark.parametrize("text,want", [("10", 10), ("all", "all"), ("0.01", 0.01), ("1%", 0.01), ("50%", 0.5)])
def test_budgets_parse(text, want):
    assert parse_budget(text) == want


@pytest.mark.parametrize("text", ["0", "-3", "2.5", "many", "150%"])
def test_bad_budgets_are_one_line(text):
    with pytest.raises(UserError, match="label budget"):
        parse_budget(text)


def test_folds_are_stratified_and_cover_the_draw_once():
    labels = np.repeat(np.arange(4), 6)
    folds = folds_of(labels, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(24))
    for f in folds:
        assert np.bincount(labels[f], minlength=4).tolist() == [2, 2, 2, 2]


@pytest.mark.parametrize("n,dims", [(40, 300), (60, 12)])  # more features than rows, and fewer (singular Gram)
def test_the_row_space_fit_is_the_fit_on_all_features(n, dims):
    rng = np.random.default_rng(n)
    x = torch.from_numpy(rng.normal(size=(n, dims)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, 4, n))
    y[:4] = torch.arange(4)
    queries = torch.from_numpy(rng.normal(size=(25, dims)).astype(np.float32))
    w, b = fit_softmax(x, y, 4, 0.5)
    coords, to_coords = row_space(x @ x.T)
    assert torch.allclose(coords @ coords.T, x @ x.T, rtol=1e-3, atol=1e-3 * float((x @ x.T).abs().max()))
    wr, br = fit_softmax(coords, y, 4, 0.5)
    want, got = queries @ w + b, (queries @ x.T) @ to_coords @ wr + br
    assert torch.allclose(got - got.mean(1, keepdim=True), want - want.mean(1, keepdim=True), atol=2e-3)


def test_one_label_per_class_takes_the_largest_decay_and_more_choose_by_folds():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(30, 50)).astype(np.float32))
    y = torch.arange(3).repeat(10)
    assert choose_decay((x @ x.T)[:3, :3], y[:3], 3, (0.1, 1.0, 10.0), 3, seed=0) == 10.0
    x[:, 0] += 4 * y.float()  # one informative feature among noise: the folds see it
    assert choose_decay(x @ x.T, y, 3, (1e-3, 1e4), 3, seed=0) == 1e-3


def _layer(seed, n=400, test=300, dims=64):
    rng = np.random.default_rng(seed)
    protos = rng.normal(size=(5, dims))
    ytr, yte = rng.integers(0, 5, n), rng.integers(0, 5, test)
    return (np.abs(protos[ytr] + 2 * rng.normal(size=(n, dims))).astype(np.float16), ytr,
            np.abs(protos[yte] + 2 * rng.normal(size=(test, dims))).astype(np.float16), yte)


def test_lowshot_layer_scores_each_draw_and_learns_more_with_more_labels():
    train, ytr, test, yte = _layer(0)
    got, every = lowshot_layer(train, ytr, test, yte, 5, [1, 20], draws=3, seed=0, decays=(0.01, 1.0, 100.0),
                               full_knn=True)
    assert list(got) == ["1", "20"] and [d["draw"] for d in got["20"]] == [0, 1, 2]
    assert all(d["labels"] == 5 for d in got["1"]) and all(d["labels"] == 100 for d in got["20"])
    assert all(d["weight_decay"] == 100.0 for d in got["1"])
    for protocol in ("linear", "knn"):
        few, more = (np.mean([d[protocol] for d in got[b]]) for b in ("1", "20"))
        assert 0.2 < few < more <= 1.0
    assert every == pytest.approx(knn_accuracy(train, ytr, test, yte, 5), abs=1e-12)  # the shared matrix's vote
    assert every >= np.mean([d["knn"] for d in got["20"]]) - 0.02
    again = lowshot_layer(train, ytr, test, yte, 5, [1, 20], draws=3, seed=0, decays=(0.01, 1.0, 100.0))
    assert again == (got, None)  # seeded: the same draws, the same fits


def test_labels_outside_the_draws_are_never_read(monkeypatch):
    from transfer import lowshot
    train, ytr, test, yte = _layer(1)
    budgets, seed = [3, 0.05], 2
    got = lowshot_layer(train, ytr, test, yte, 5, budgets, draws=2, seed=seed, decays=(0.1, 10.0))[0]
    draws = {(b, d): draw_labelled(ytr, b, d, seed) for b in budgets for d in range(2)}
    drawn = np.unique(np.concatenate(list(draws.values())))
    outside = np.setdiff1d(np.arange(len(ytr)), drawn)
    scrambled = ytr.copy()
    scrambled[outside] = (ytr[outside] + 1) % 5  # every label the draws did not pick is now wrong
    # a balanced draw must know which images belong to which class (a user labels K of each); once it
    # is made, the fits, the fold choice and the votes read the drawn labels only
    monkeypatch.setattr(lowshot, "draw_labelled", lambda labels, b, d, s: draws[(b, d)])
    assert lowshot_layer(train, scrambled, test, yte, 5, budgets, draws=2, seed=seed, decays=(0.1, 10.0))[0] == got


def test_draws_come_from_the_training_split_never_from_validation_or_test(tmp_path):
    from transfer.datasets import load_dataset

    from .test_datasets import mnist_like
    d = load_dataset("fashion-mnist", mnist_like(str(tmp_path / "fm"), n=(200, 50)), val_fraction=0.2, seed=0)
    train = d["train"]
    drawn = train.images[draw_labelled(train.labels, 3, draw=0, seed=0)]  # what the probe's draws index
    as_bytes = {s: {im.tobytes() for im in d[s].images} for s in ("val", "test")}
    assert len(drawn) == 30 and not {im.tobytes() for im in drawn} & (as_bytes["val"] | as_bytes["test"])


def _objective(x, y, w, b, weight_decay):
    """fit_softmax's objective in float64: mean cross-entropy + weight_decay/2 |W|^2."""
    x, w, b = x.double(), w.double(), b.double()
    return float(torch.nn.functional.cross_entropy(x @ w + b, y) + 0.5 * weight_decay * (w * w).sum())


def test_a_stack_of_draws_is_solved_as_each_draw_alone():
    """The draws of a budget are one stacked problem (their objectives summed). What the optimum fixes is each
    draw's objective value (W is unique, b up to a shift, but a float32 solver leaves them loose where the
    objective is flat), so that is compared: L-BFGS stops when a step changes the float32 sum of the B
    objectives by less than its resolution, eps32 x the sum, so each draw's objective at the stacked solution is
    its own optimum's to a small multiple of that (64 x; seen: <= 6 x). A stacking that solves another problem
    (here: the mean over all draws, which weakens each draw's data term B-fold) misses by > 1000 x the bound."""
    rng = np.random.default_rng(5)
    grams, ys = [], []
    for _ in range(4):
        y = torch.arange(3).repeat(8)
        x = torch.from_numpy(rng.normal(size=(24, 40)).astype(np.float32))
        x[:, :3] += 2.0 * torch.nn.functional.one_hot(y, 3)
        grams.append(x @ x.T), ys.append(y)
    grams, ys = torch.stack(grams), torch.stack(ys)
    coords, _ = stacked_row_space(grams)
    eps32 = float(np.finfo(np.float32).eps)
    for wd in (0.1, torch.tensor([0.1, 1.0, 10.0, 0.1])[:, None, None]):
        w, b = fit_softmax(coords, ys, 3, wd)
        wrong_w, wrong_b = fit_linear(coords, 3, lambda z: torch.nn.functional.cross_entropy(
            z.reshape(-1, 3), ys.reshape(-1)), wd)
        decays = [wd if isinstance(wd, float) else float(wd[d]) for d in range(4)]
        alone = [fit_softmax(coords[d], ys[d], 3, decays[d]) for d in range(4)]
        best = [_objective(coords[d], ys[d], *alone[d], decays[d]) for d in range(4)]
        bound = 64 * eps32 * sum(best)
        for d in range(4):
            stacked = _objective(coords[d], ys[d], w[d], b[d], decays[d])
            assert abs(stacked - best[d]) <= bound, (d, stacked, best[d], bound)
            wrong = _objective(coords[d], ys[d], wrong_w[d], wrong_b[d], decays[d])
            assert wrong - best[d] > 1000 * bound  # the check tells a wrong stacking apart
    decays = [1e-3, 1.0, 1e3]
    together = choose_decays(grams, ys, 3, decays, 3, [0, 1, 2, 3])
    assert together == [choose_decay(grams[d], ys[d], 3, decays, 3, seed=d) for d in range(4)]
