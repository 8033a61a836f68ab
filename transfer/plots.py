"""The plots the seeds show: loss/accuracy curves of both phases, both LR schedules on a log axis,
conv1 filter grids (one net or two side by side), activation maximisation by gradient ascent from
noise (a filter or a class, maximised or minimised) and feature maps of a layer for an image."""
import csv
import math
import os

import matplotlib
import numpy as np
import torch

from tools.run.atomic import atomic_open
from tools.run.runrecord import read_json
from tools.run.runtime import generator

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import (FixedLocator, FuncFormatter, LogLocator, MaxNLocator,  # noqa: E402
                               NullLocator)


def _save(fig, path):
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return path


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _summary(out):
    path = os.path.join(out, "summary.json")
    if not os.path.exists(path):
        return None
    return read_json(path, "a run summary (summary.json)")


def plot_history(out, summary=None):
    """out/curves.png: per epoch of both phases, training loss/accuracy (lines) and validation (points);
    the phases, the epoch whose weights were kept and the test accuracy marked."""
    rows = _rows(os.path.join(out, "history.csv"))
    summary = summary if summary is not None else _summary(out)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    x = np.arange(1, len(rows) + 1)
    for key, ax, label in (("loss", axes[0], "cross-entropy loss"), ("acc", axes[1], "accuracy")):
        ax.plot(x, [float(r[f"train_{key}"]) for r in rows], "-", color="C0", label="train (epoch mean)")
        ax.plot(x, [float(r[f"val_{key}"]) for r in rows], "o", color="C1", label="validation")
        ax.set_xlabel("epoch (both phases)")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.5, len(rows) + 0.5)
        ax.grid(alpha=0.3)
    starts = [0] + [i for i in range(1, len(rows)) if rows[i]["phase"] != rows[i - 1]["phase"]]
    for i in starts:
        for ax in axes:
            if i:
                ax.axvline(i + 0.5, color="gray", ls="--", lw=0.8)
            ax.text(i + 0.6, 0.98, rows[i]["phase"], transform=ax.get_xaxis_transform(), va="top", fontsize=8)
    if summary:
        kept = _kept_epoch(rows, summary)
        if kept is not None:
            for ax, key in ((axes[0], "val_loss"), (axes[1], "val_acc")):
                ax.plot(kept + 1, float(rows[kept][key]), "*", ms=14, color="C3", label="weights kept")
        axes[1].axhline(summary["test_accuracy"], color="C2", ls=":",
                        label=f"test {summary['test_accuracy']:.4f}")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, os.path.join(out, "curves.png"))


def _kept_epoch(rows, summary):
    """Row index of the epoch whose weights the run kept: the last phase's best validation loss."""
    phases = summary.get("phases") or {}
    if not phases:
        return None
    last = list(phases)[-1]
    best = (phases[last] or {}).get("best_epoch")
    if best is None:
        return None
    for i, r in enumerate(rows):
        if r["phase"] == last and int(r["epoch"]) == int(best):
            return i
    return None


def plot_lr(out):
    """out/lr.png: every iteration's learning rate, the phases one after another (boundaries marked), on a log
    axis whose ticks name the rates used; None (and no file) when every phase kept one rate, which a flat
    line would only restate (history.csv has it)."""
    rows = _rows(os.path.join(out, "lr.csv"))
    path = os.path.join(out, "lr.png")
    phases = {p: [float(r["lr"]) for r in rows if r["phase"] == p] for p in dict.fromkeys(r["phase"] for r in rows)}
    if all(min(v) == max(v) for v in phases.values()):
        if os.path.exists(path):
            os.unlink(path)
        return None
    fig, ax = plt.subplots(figsize=(8, 4.2))
    start = 0
    for k, (phase, lrs) in enumerate(phases.items()):
        ax.step(np.arange(start, start + len(lrs)), lrs, where="post", color=f"C{k}",
                label=f"{phase}: {len(lrs)} iterations, {max(lrs):.3g} to {min(lrs):.3g}")
        if start:
            ax.axvline(start - 0.5, color="gray", ls="--", lw=0.8)
        ax.text(start, 1.01, f" {phase}", transform=ax.get_xaxis_transform(), va="bottom", fontsize=8)
        start += len(lrs)
    ax.set_yscale("log")
    used = sorted({float(f"{v:.4g}") for lrs in phases.values() for v in lrs})
    if len(used) <= 8:  # a step schedule: one tick per rate it used
        ax.yaxis.set_major_locator(FixedLocator(used))
        ax.yaxis.set_minor_locator(NullLocator())
    else:  # a smooth decay: ticks at 1, 2 and 5 of every decade, each named
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = min(used), max(used)
    ax.set_ylim(lo / 1.5, hi * 1.5)
    ax.set_xlim(-0.5, start - 0.5)
    ax.set_xlabel("iteration (the phases one after another)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("learning rate (log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _shown(weights, bgr=False):
    """The channels a filter is drawn with: RGB (from Caffe's BGR when `bgr`), grey, or the first of others."""
    w = weights.detach().float().cpu()
    if w.shape[1] not in (1, 3):
        w = w[:, :1]
    return w.flip(1) if bgr and w.shape[1] == 3 else w


def _grid(weights, bgr=False, scale=None):
    """Filters as one image, a white pixel between them, RGB for display, each filter mapped to [0, 1] around
    0 (mid-grey) by its own largest |weight|, or by `scale` (one value per filter) to draw two nets alike."""
    w = _shown(weights, bgr)
    if scale is None:
        scale = w.abs().amax(dim=(1, 2, 3))
    w = 0.5 + 0.5 * w / scale.reshape(-1, 1, 1, 1).clamp_min(1e-12)
    return _tiled(w.clamp(0, 1), int(math.ceil(math.sqrt(w.shape[0]))), gap=1, fill=1.0)


def _channels_side_by_side(diff, bgr):
    """(N, C, k, k) -> (N, 1, k, C*k + C - 1): a filter's channels in a row (R G B), NaN between them."""
    d = diff.detach().float().cpu()
    if bgr and d.shape[1] == 3:
        d = d.flip(1)
    gap = torch.full((*d.shape[:1], 1, d.shape[2], 1), float("nan"))
    parts = []
    for c in range(d.shape[1]):
        parts += [d[:, c:c + 1]] + ([gap] if c < d.shape[1] - 1 else [])
    return torch.cat(parts, dim=3)


def plot_filters(path, *named_weights, bgr=False):
    """A grid of first-layer filters per (title, weights). Two of the same shape (before and after training)
    are drawn with each filter scaled alike in both panels, then their difference with a diverging map (each
    filter's channels side by side, 0 white) and a colour bar; the title gives how far they moved (the
    relative norm of the change). `bgr`: the weights take Caffe's BGR input (a CFN); they are drawn in RGB."""
    pair = len(named_weights) == 2 and named_weights[0][1].shape == named_weights[1][1].shape
    scale = None
    if pair:
        scale = torch.stack([_shown(w).abs().amax(dim=(1, 2, 3)) for _, w in named_weights]).amax(dim=0)
    fig, axes = plt.subplots(1, len(named_weights) + pair, figsize=(5 * (len(named_weights) + pair) + pair, 5.6),
                             squeeze=False)
    for ax, (title, w) in zip(axes[0], named_weights):
        img = _grid(w, bgr, scale)
        ax.imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{title}\n{w.shape[0]} filters, {w.shape[2]}x{w.shape[3]}" +
                     (", each scaled as in the other panel" if pair else ""), fontsize=10)
        ax.axis("off")
    if pair:
        before, after = (w.detach().float().cpu() for _, w in named_weights)
        diff = after - before
        rel = float(diff.norm() / before.norm().clamp_min(1e-12))
        side = _channels_side_by_side(diff, bgr)
        n, _, h, w = side.shape
        grid = _tiled(side, max(1, round(math.sqrt(n * (h + 3) / (w + 3)))), gap=3)  # about square; a filter's
        # channels 1 px apart, filters 3
        bound = float(diff.abs().max()) or 1.0
        ax = axes[0][-1]
        shown = ax.imshow(grid, cmap="RdBu_r", vmin=-bound, vmax=bound, interpolation="nearest")
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="weight change")
        ax.set_title(f"{named_weights[1][0]} minus {named_weights[0][0]}" +
                     (" (channels R G B side by side)" if side.shape[3] > diff.shape[3] else "") +
                     f"\nrelative change ||after - before|| / ||before|| = {rel:.3g}", fontsize=10)
        ax.axis("off")
        fig.suptitle(f"first-layer filters moved by {100 * rel:.1f} % (relative norm)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.94 if pair else 1))
    return _save(fig, path)


def _tiled(tiles, cols, gap=2, fill=np.nan):
    """(N, C, h, w) tiles in a grid `cols` wide with `gap` pixels of `fill` around and between them, as an
    (H, W, C) array ((H, W) for one channel)."""
    n, c, h, w = tiles.shape
    rows = -(-n // cols)
    grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, c), fill, dtype=np.float32)
    for i in range(n):
        y, x = gap + (i // cols) * (h + gap), gap + (i % cols) * (w + gap)
        grid[y:y + h, x:x + w] = tiles[i].permute(1, 2, 0).numpy()
    return grid[..., 0] if c == 1 else grid


def activation_maximisation(model, layer, index, size, channels=3, steps=60, lr=0.1, sign=1.0, seed=0):
    """Gradient ascent from noise on the input: maximise (sign=+1) or minimise (-1) the mean activation
    of channel/unit `index` of module `layer` (a filter, or a class for the last layer)."""
    model.eval()
    g = generator(seed)
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


@torch.no_grad()
def layer_units(model, layer, size, channels=3):
    """How many channels (a conv layer) or units (a linear one) `layer` outputs, from one pass on a blank input."""
    store = {}
    hook = layer.register_forward_hook(lambda m, i, o: store.__setitem__("out", o))
    try:
        model.eval()
        model(torch.zeros(1, channels, size, size))
    finally:
        hook.remove()
    out = store["out"]
    return int(out.shape[1] if out.dim() > 1 else out.shape[0])


def plot_activation_maximisation(path, model, layer, indices, size, channels=3, title="", steps=60, names=None):
    """Rows: maximised and minimised input for each index (named by `names`, e.g. the classes)."""
    fig, axes = plt.subplots(2, len(indices), figsize=(2.2 * len(indices), 4.6), squeeze=False)
    for j, idx in enumerate(indices):
        for i, sign in enumerate((1.0, -1.0)):
            img = activation_maximisation(model, layer, idx, size, channels, steps, sign=sign)
            img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
            arr = img.permute(1, 2, 0).numpy()
            axes[i][j].imshow(arr[..., 0] if channels == 1 else arr, cmap="gray" if channels == 1 else None)
            name = names[idx] if names is not None and 0 <= idx < len(names) else idx
            axes[i][j].set_title(f"{name} {'max' if sign > 0 else 'min'}", fontsize=8)
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


def plot_probe(tables, path, title, chance=None):
    """Accuracy per layer with every training label: the pretrained backbone and its random-init twins (mean ±
    SE), the linear probe solid and kNN dashed (whichever `tables` - {"linear"|"knn": rows} - has), chance
    dotted."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    rows = next(iter(tables.values()))
    x = np.arange(len(rows))
    for protocol, rows in tables.items():
        style, name = ("-", "linear probe") if protocol == "linear" else ("--", "kNN")
        k = rows[0].get("pretrained_n", 1)
        ax.errorbar(x, [r["pretrained"] for r in rows], yerr=[r.get("pretrained_se", 0) for r in rows], fmt="o" + style,
                    color="C0", capsize=4, label=f"pretrained, {name}" + (f" (mean ± SE, n={k})" if k > 1 else ""))
        ax.errorbar(x, [r["random_mean"] for r in rows], yerr=[r["random_se"] for r in rows], fmt="s" + style,
                    color="C1", capsize=4, label=f"random init, {name} (mean ± SE, n={rows[0]['n']})")
    if chance:
        ax.axhline(chance, color="gray", ls=":", label=f"chance ({chance:.3g})")
    ax.set_xticks(x, [f"{r['layer']}\n{r['dims']}" for r in rows])
    ax.set_xlabel("layer of the backbone (feature dimensions)")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_label_efficiency(rows, path, title, chance=None):
    """Accuracy against labelled images per class (log x), pretrained and random-init twins with ± SE bands,
    linear probe solid, kNN dashed, prototype dotted, one panel per layer; 'all' sits at 4x the largest budget."""
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    cols = min(3, len(layers))
    fig, axes = plt.subplots(-(-len(layers) // cols), cols, figsize=(4.2 * cols, 3.4 * -(-len(layers) // cols)),
                             squeeze=False)
    for ax, layer in zip(axes.flat, layers):
        for protocol, style in (("linear", "-"), ("knn", "--"), ("prototype", ":")):
            mine = [r for r in rows if r["layer"] == layer and r["protocol"] == protocol]
            if not mine:
                continue
            xs = [float(r["per_class"]) if r["budget"] != "all" else 0.0 for r in mine]
            xs = np.array([x or 4 * max(xs + [1.0]) for x in xs])
            order = np.argsort(xs)
            for key, se, colour, who in (("pretrained", "pretrained_se", "C0", "pretrained"),
                                         ("random_mean", "random_se", "C1", "random init")):
                y = np.array([mine[i][key] for i in order])
                e = np.array([mine[i][se] for i in order])
                ax.plot(xs[order], y, style, color=colour, marker="o", ms=3, label=f"{who}, {protocol}")
                ax.fill_between(xs[order], y - e, y + e, color=colour, alpha=0.2)
        if chance:
            ax.axhline(chance, color="gray", ls=":", label=f"chance ({chance:.3g})")
        ax.set_xscale("log")
        ax.set_title(layer)
        ax.set_xlabel("labelled images per class ('all' at the right)")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(layers):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{title}: label efficiency (mean ± SE over nets)")
    fig.tight_layout()
    return _save(fig, path)


def plot_gain(series, path, title):
    """What pretraining adds, the panel people read: pretrained minus random (points) against labelled images
    per class (log x; 'all' at the right), ± the SE of the difference, a zero line; one panel per protocol,
    one colour per series (`series`: {name: label_efficiency rows}, e.g. a probe's layers, or several methods'
    chosen stages)."""
    protocols = list(dict.fromkeys(r["protocol"] for rows in series.values() for r in rows))
    # wide enough for the title whatever the number of panels
    fig, axes = plt.subplots(1, len(protocols), figsize=(max(7.0, 4.6 * len(protocols)), 3.8), squeeze=False)
    for ax, protocol in zip(axes.flat, protocols):
        for i, (name, rows) in enumerate(series.items()):
            mine = [r for r in rows if r["protocol"] == protocol]
            if not mine:
                continue
            xs = [float(r["per_class"]) if r["budget"] != "all" else 0.0 for r in mine]
            xs = np.array([x or 4 * max(xs + [1.0]) for x in xs])
            order = np.argsort(xs)
            gain = np.array([100 * (float(mine[j]["pretrained"]) - float(mine[j]["random_mean"])) for j in order])
            se = np.array([100 * float(np.hypot(float(mine[j]["pretrained_se"]), float(mine[j]["random_se"])))
                           for j in order])
            ax.errorbar(xs[order], gain, yerr=se, color=f"C{i % 10}", marker="o", ms=3, capsize=2, label=name)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(protocol)
        ax.set_xlabel("labelled images per class ('all' at the right)")
        ax.set_ylabel("pretrained − random (points)")
        ax.grid(alpha=0.3, which="both")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{title}: gain over random init (± SE of the difference)")
    fig.tight_layout()
    return _save(fig, path)
