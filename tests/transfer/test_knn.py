"""The weighted kNN against a brute-force float64 transcription of Wu et al. 2018's vote."""
import numpy as np
import pytest
import torch

from transfer.knn import knn_accuracy, unit_rows, view, vote


def brute_force(bank, bank_labels, queries, n_classes, k, temperature, features):
    """One query at a time, in float64: cosine similarity to every bank row, the k largest vote exp(s/T)."""
    bank, queries = bank.astype(np.float64), queries.astype(np.float64)
    if features != "raw":
        mean, sd = bank.mean(0), bank.std(0)
        bank, queries = bank - mean, queries - mean
        if features == "standardised":
            keep = sd > 1e-6
            bank, queries = bank[:, keep] / sd[keep], queries[:, keep] / sd[keep]
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    out = []
    for q in queries:
        s = bank @ (q / np.linalg.norm(q))
        top = np.argsort(-s, kind="stable")[:k]
        scores = np.zeros(n_classes)
        for i in top:
            scores[bank_labels[i]] += np.exp(s[i] / temperature)
        out.append(int(np.argmax(scores)))
    return np.array(out)


@pytest.mark.parametrize("k,temperature,features", [(20, 0.07, "centred"), (5, 0.5, "raw"), (1, 0.07, "centred"),
                                                    (500, 1.0, "centred"), (20, 0.07, "standardised")])
def test_vote_equals_brute_force(k, temperature, features):
    rng = np.random.default_rng(k)
    n_classes, dims = 7, 40
    protos = rng.normal(size=(n_classes, dims))
    bank_labels = rng.integers(0, n_classes, 300)
    bank = np.abs(protos[bank_labels] + 1.5 * rng.normal(size=(300, dims))).astype(np.float32)  # ReLU-like
    bank[:, 3] = 2.0  # a dead feature: constant on the bank, left out when standardised
    query_labels = rng.integers(0, n_classes, 200)
    queries = np.abs(protos[query_labels] + 1.5 * rng.normal(size=(200, dims))).astype(np.float32)
    want = brute_force(bank, bank_labels, queries, n_classes, min(k, 300), temperature, features)
    to_unit = view(bank, features)
    sim = to_unit(queries) @ to_unit(bank).T
    got = vote(sim, torch.from_numpy(bank_labels), n_classes, k, temperature).numpy()
    assert (got == want).mean() >= 0.995  # float32 vs float64 may flip a near-tie, nothing more
    acc = knn_accuracy(bank, bank_labels, queries, query_labels, n_classes, k, temperature, features)
    assert acc == pytest.approx((want == query_labels).mean(), abs=0.006)
    assert acc > 2 / n_classes  # the features carry the classes: far above chance


def test_a_low_temperature_is_the_nearest_neighbour_and_k_caps_at_the_bank():
    bank = np.array([[1, 0], [0.9, 0.1], [0, 1]], np.float32)
    labels = torch.tensor([0, 1, 2])
    sim = unit_rows(np.array([[1, 0.05]], np.float32)) @ unit_rows(bank).T
    assert vote(sim, labels, 3, k=3, temperature=1e-3).item() == 0  # the closest one decides
    assert vote(sim, labels, 3, k=50, temperature=100.0).item() in (0, 1, 2)  # k > bank: every item votes
    # equal weights (high T) and 2 of 3 neighbours of class 1: the majority wins
    sim2 = torch.tensor([[0.5, 0.5, 0.49]])
    assert vote(sim2, torch.tensor([0, 1, 1]), 2, k=3, temperature=1e6).item() == 1


def test_standardising_undoes_a_feature_of_a_large_scale():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 20)).astype(np.float32)
    x[:, 0] += 5 * labels  # the informative feature
    x[:, 1:6] *= 100  # noise at a hundred times the scale: its direction picks the neighbours
    acc = {f: knn_accuracy(x[:300], labels[:300], x[300:], labels[300:], 2, features=f)
           for f in ("centred", "standardised")}
    assert acc["standardised"] > 0.85 and acc["centred"] < 0.75
