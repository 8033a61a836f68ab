"""Weighted k-nearest-neighbour classification on frozen features (Wu et al. 2018; the monitor of DINO and
solo-learn): cosine similarity to a labelled bank, the k most similar vote with weight exp(sim / T).

No training, so it measures the features themselves: nothing is fit to the labels but the vote.
"""
import numpy as np
import torch

K = 20
TEMPERATURE = 0.07


FEATURES = ("centred", "standardised", "raw")


def unit_rows(x, center=None):
    """(N, D) float32 rows minus `center`, scaled to unit length; a zero row stays 0."""
    x = torch.from_numpy(np.array(x, dtype=np.float32))
    if center is not None:
        x = x - torch.as_tensor(center, dtype=torch.float32)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def view(bank, features="centred"):
    """The map from feature rows to the unit rows the cosine compares, from the bank's statistics: minus its
    mean ("centred": a ReLU layer's features share one positive direction, which would make every pair
    similar), z-scored by its mean and SD with the features constant on it left out ("standardised": the
    linear probe's view, in which no few large-scale features outvote the rest), or as they are ("raw")."""
    if features not in FEATURES:
        raise ValueError(f"kNN features '{features}': expected one of {FEATURES}")
    if features == "raw":
        return unit_rows
    bank = np.asarray(bank, dtype=np.float32)
    mean = bank.mean(0)
    if features == "centred":
        return lambda x: unit_rows(x, mean)
    std = bank.std(0)
    keep = std > 1e-6
    return lambda x: unit_rows((np.asarray(x, dtype=np.float32)[:, keep] - mean[keep]) / std[keep])


def vote(sim, bank_labels, n_classes, k=K, temperature=TEMPERATURE):
    """Predicted classes from a (queries, bank) similarity matrix: the k most similar bank items (all of
    them when the bank is smaller) add exp(sim / T) to their class; the highest total wins (ties: the
    lower class index)."""
    k = min(k, sim.shape[1])
    top, idx = sim.topk(k, dim=1)
    weights = ((top - top[:, :1]) / temperature).exp()  # shifted by each row's best: the same vote, no overflow
    scores = torch.zeros(sim.shape[0], n_classes, dtype=weights.dtype)
    scores.scatter_add_(1, bank_labels[idx], weights)
    return scores.argmax(1)


def similarities(queries, bank, chunk=4096):
    """queries @ bank.T, computed in chunks of query rows (float32)."""
    return torch.cat([queries[i:i + chunk] @ bank.T for i in range(0, len(queries), chunk)]) \
        if len(queries) else torch.zeros(0, len(bank))


def knn_accuracy(bank, bank_labels, queries, query_labels, n_classes, k=K, temperature=TEMPERATURE,
                 features="centred"):
    """Top-1 accuracy of the weighted vote of `bank` (its labels) on `queries`, compared in `view`'s terms."""
    to_unit = view(bank, features)
    bank, labels = to_unit(bank), torch.from_numpy(np.array(bank_labels, dtype=np.int64))
    queries, truth = to_unit(queries), torch.from_numpy(np.array(query_labels, dtype=np.int64))
    step = max(1, (1 << 26) // max(1, len(bank)))  # similarity rows held at once: 256 MB of them
    correct = sum(int((vote(queries[i:i + step] @ bank.T, labels, n_classes, k, temperature)
                       == truth[i:i + step]).sum()) for i in range(0, len(queries), step))
    return correct / max(1, len(queries))
