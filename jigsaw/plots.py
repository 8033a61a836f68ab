"""PNG curves of a pretraining run (loss, pretext accuracy, learning rate) from its CSV logs."""
import csv
import math
import os

import matplotlib
import numpy as np

from tools.run.atomic import atomic_open

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _read(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def smooth(values, window):
    """Trailing mean over up to `window` points, as Caffe's average_loss shows the loss; same length."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) < 2:
        return v
    c = np.concatenate([[0.0], np.cumsum(v)])
    k = np.arange(1, len(v) + 1)
    n = np.minimum(k, window)
    return (c[k] - c[k - n]) / n


def plot_training(out, chance=None, window=None, test_interval=None):
    """Write out/curves.png from out/log.csv and out/val.csv; returns the PNG path. The noisy per-iteration
    training curves are drawn faint, with their trailing mean over `window` iterations (the solver's
    average_loss; by default 1/50 of the run) on top, validation joined point to point at every test interval;
    with `chance` (1/N), the loss panel marks ln N, the loss of a net that guesses; the learning rate gets a
    panel only if it changes, the monitor's kNN accuracies (`--monitor`) one when val.csv has them."""
    train, val = _read(os.path.join(out, "log.csv")), _read(os.path.join(out, "val.csv"))
    lrs = [float(r["lr"]) for r in train]
    with_lr = bool(lrs) and min(lrs) != max(lrs)
    monitored = [k for k in (val[0] if val else {}) if k.startswith("knn_")]
    titles = ["pretext loss", "pretext accuracy"] + ["learning rate"] * with_lr + \
        ["features: kNN accuracy (--monitor)"] * bool(monitored)
    fig, axes = plt.subplots(1, len(titles), figsize=(5.2 * len(titles) + 0.5, 4))
    _draw_runs(axes, train, val, lrs if with_lr else None, window, test_interval)
    if monitored:
        _draw_monitor(axes[-1], val, monitored)
    if chance:
        n = round(1 / chance)
        axes[0].axhline(math.log(n), color="gray", ls="--", label=f"ln {n} = {math.log(n):.2f} (chance)")
        axes[1].axhline(chance, color="gray", ls="--", label=f"chance (1/{n})")
    axes[0].set_ylabel("cross-entropy loss")
    axes[1].set_ylabel("accuracy (share of puzzles solved)")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(out, "curves.png")
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


def _draw_runs(axes, train, val, lrs, window, test_interval):
    """The training curves (faint, with their trailing mean), the learning rate when it changes (`lrs`), and
    validation point to point."""
    if train:
        its = [int(r["iter"]) for r in train]
        w = window if window and window > 1 else max(1, len(train) // 50)
        for ax, key, label in ((axes[0], "loss", "train"), (axes[1], "top1", "train top-1")):
            values = [float(r[key]) for r in train]
            ax.plot(its, values, lw=0.5, alpha=0.3, color="C0")
            ax.plot(its, smooth(values, w), lw=1.5, color="C0", label=f"{label} (mean of {w} iterations)")
        if lrs:
            axes[2].semilogy(its, lrs)
            axes[2].set_ylabel("learning rate")
    if val:
        its = [int(r["iter"]) for r in val]
        every = f" (every {test_interval} iterations)" if test_interval else ""
        axes[0].plot(its, [float(r["loss"]) for r in val], "o-", color="C1", label="validation" + every)
        axes[1].plot(its, [float(r["top1"]) for r in val], "o-", color="C1", label="validation top-1" + every)
        axes[1].plot(its, [float(r["top5"]) for r in val], "s-", color="C2", label="validation top-5")


def _draw_monitor(ax, val, monitored):
    """The monitor's kNN accuracy per layer, one colour each (rows of a resume without it are blank)."""
    rows = [r for r in val if r.get(monitored[0])]
    for k, key in enumerate(monitored):
        ax.plot([int(r["iter"]) for r in rows], [float(r[key]) for r in rows], "o-", ms=3,
                color=plt.cm.viridis(0.85 * k / max(1, len(monitored) - 1)), label=key[4:])
    ax.set_ylabel("kNN top-1 on the monitor's labelled set")
