"""The plots the seeds show: loss/accuracy curves of both phases, both LR schedules on a log axis,
conv1 filter grids (one net or two side by side), activation maximisation by gradient ascent from
noise (a filter or a class, maximised or minimised) and feature maps of a layer for an image."""
import csv
import math
import os

import matplotlib
import numpy as np
import torch

from tools.atomic import atomic_open

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path):
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def plot_history(out):
    """out/curves.png: train vs validation loss and accuracy per epoch, phases marked."""
    rows = _rows(os.path.join(out, "history.csv"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    x = np.arange(1, len(rows) + 1)
    for key, ax in (("loss", axes[0]), ("acc", axes[1])):
        ax.plot(x, [float(r[f"train_{key}"]) for r in rows], "o-", label="train")
        ax.plot(x, [float(r[f"val_{key}"]) for r in rows], "s-", label="validation")
        ax.set_xlabel("epoch (both phases)")
        ax.set_title("loss" if key == "loss" else "accuracy")
    for i in range(1, len(rows)):
        if rows[i]["phase"] != rows[i - 1]["phase"]:
            for ax in axes:
                ax.axvline(i + 0.5, color="gray", ls="--")
                ax.text(i + 0.6, ax.get_ylim()[1], rows[i]["phase"], va="top", fontsize=8)
    axes[0].legend()
    return _save(fig, os.path.join(out, "curves.png"))


def plot_lr(out):
    """out/lr.png: the learning rate of each phase per iteration on a log axis."""
    rows = _rows(os.path.join(out, "lr.csv"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for phase in dict.fromkeys(r["phase"] for r in rows):
        sel = [r for r in rows if r["phase"] == phase]
        ax.semilogy([int(r["iteration"]) for r in sel], [float(r["lr"]) for r in sel], label=phase)
    ax.set_xlabel("iteration within the phase")
    ax.set_ylabel("learning rate")
    ax.legend()
    return _save(fig, os.path.join(out, "lr.png"))


def _grid(weights):
    w = weights.detach().float().cpu()
    if w.shape[1] not in (1, 3):
        w = w[:, :1]
    w = (w - w.amin(dim=(1, 2, 3), keepdim=True)) / (w.amax(dim=(1, 2, 3), keepdim=True) -
                                                     w.amin(dim=(1, 2, 3), keepdim=True)).clamp_min(1e-12)
    n, c, k = w.shape[0], w.shape[1], w.shape[2]
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = torch.ones(c, rows * (k + 1) + 1, cols * (k + 1) + 1)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[:, 1 + r * (k + 1):1 + r * (k + 1) + k, 1 + q * (k + 1):1 + q * (k + 1) + k] = w[i]
    img = grid.permute(1, 2, 0).numpy()
    return img[..., 0] if c == 1 else img


def plot_filters(path, *named_weights):
    """A grid of first-layer filters per (title, weight tensor); two give a side-by-side comparison."""
    fig, axes = plt.subplots(1, len(named_weights), figsize=(5 * len(named_weights), 5), squeeze=False)
    for ax, (title, w) in zip(axes[0], named_weights):
        img = _grid(w)
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray")
        ax.set_title(f"{title} ({w.shape[0]} filters {w.shape[2]}x{w.shape[3]})")
        ax.axis("off")
    return _save(fig, path)


def activation_maximisation(model, layer, index, size, channels=3, steps=60, lr=0.1, sign=1.0, seed=0):
    """Gradient ascent from noise on the input: maximise (sign=+1) or minimise (-1) the mean activation
    of channel/unit `index` of module `layer` (a filter, or a class for the last layer)."""
    model.eval()
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(1, channels, size, size, generator=g) * 0.1).requires_grad_(True)
    store = {}
    hook = layer.register_forward_hook(lambda m, i, o: store.__setitem__("out", o))
    opt = torch.optim.Adam([x], lr=lr)
    try:
        for _ in range(steps):
            opt.zero_grad()
            model(x)
            out = store["out"]
            act = out[0, index].mean() if out.dim() > 1 else out[index]
            (-sign * act).backward()
            opt.step()
    finally:
        hook.remove()
    return x.detach()[0]


def plot_activation_maximisation(path, model, layer, indices, size, channels=3, title="", steps=60):
    """Rows: maximised and minimised input for each index."""
    fig, axes = plt.subplots(2, len(indices), figsize=(2.2 * len(indices), 4.6), squeeze=False)
    for j, idx in enumerate(indices):
        for i, sign in enumerate((1.0, -1.0)):
            img = activation_maximisation(model, layer, idx, size, channels, steps, sign=sign)
            img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
            arr = img.permute(1, 2, 0).numpy()
            axes[i][j].imshow(arr[..., 0] if channels == 1 else arr, cmap="gray" if channels == 1 else None)
            axes[i][j].set_title(f"{idx} {'max' if sign > 0 else 'min'}", fontsize=8)
            axes[i][j].axis("off")
    fig.suptitle(title)
    return _save(fig, path)


@torch.no_grad()
def plot_feature_maps(path, model, layer, image, max_maps=32, title=""):
    """The activations of `layer` for one input image (C, H, W), one panel per channel."""
    store = {}
    hook = layer.register_forward_hook(lambda m, i, o: store.__setitem__("out", o))
    try:
        model.eval()
        model(image[None])
    finally:
        hook.remove()
    maps = store["out"][0][:max_maps].float()
    cols = int(math.ceil(math.sqrt(len(maps))))
    fig, axes = plt.subplots(int(math.ceil(len(maps) / cols)), cols, figsize=(1.6 * cols, 1.6 * cols),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, m) in enumerate(zip(axes.flat, maps)):
        ax.imshow(m.numpy() if m.dim() == 2 else m.reshape(1, -1).numpy(), cmap="viridis")
        ax.set_title(f"{i}: {float(m.min()):.2g}..{float(m.max()):.2g}", fontsize=6)
    fig.suptitle(title)
    return _save(fig, path)


def plot_probe(rows, path, title):
    """Probe accuracy per layer: the pretrained backbone and its random-init twins (mean ± SE)."""
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    k = rows[0].get("pretrained_n", 1)
    ax.errorbar(x, [r["pretrained"] for r in rows], yerr=[r.get("pretrained_se", 0) for r in rows], fmt="o-",
                capsize=4, label="pretrained" + (f" (mean ± SE, n={k})" if k > 1 else ""))
    ax.errorbar(x, [r["random_mean"] for r in rows], yerr=[r["random_se"] for r in rows], fmt="s--", capsize=4,
                label=f"random init (mean ± SE, n={rows[0]['n']})")
    ax.set_xticks(x, [f"{r['layer']}\n{r['dims']}" for r in rows])
    ax.set_xlabel("layer (features)")
    ax.set_ylabel("test accuracy (linear probe)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
