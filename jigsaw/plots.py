"""PNG curves of a pretraining run (loss, pretext accuracy, learning rate) from its CSV logs."""
import csv
import os

import matplotlib

from tools.atomic import atomic_open

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _read(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def plot_training(out, chance=None):
    """Write out/curves.png from out/log.csv and out/val.csv; returns the PNG path."""
    train, val = _read(os.path.join(out, "log.csv")), _read(os.path.join(out, "val.csv"))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if train:
        its = [int(r["iter"]) for r in train]
        axes[0].plot(its, [float(r["loss"]) for r in train], lw=0.8, label="train")
        axes[1].plot(its, [float(r["top1"]) for r in train], lw=0.8, label="train top-1")
        axes[2].semilogy(its, [float(r["lr"]) for r in train])
    if val:
        its = [int(r["iter"]) for r in val]
        axes[0].plot(its, [float(r["loss"]) for r in val], "o-", label="validation")
        axes[1].plot(its, [float(r["top1"]) for r in val], "o-", label="validation top-1")
        axes[1].plot(its, [float(r["top5"]) for r in val], "s-", label="validation top-5")
    if chance:
        axes[1].axhline(chance, color="gray", ls="--", label="chance")
    for ax, title in zip(axes, ("pretext loss", "pretext accuracy", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("iteration")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "curves.png")
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path
