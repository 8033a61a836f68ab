"""Linear probes per layer, pretrained against random-init twins (Noroozi & Favaro 2016 Table 2 style;
Zhang et al. 2017, Goyal et al. 2019): is the pretraining worth anything?

A frozen backbone's activations after each block (after the ReLU for a CFN branch) are average-pooled
to about `target_dim` values, cached once on disk (float16), standardised with the training split's
statistics, and fed to a multinomial logistic regression (full-batch L-BFGS) per layer; the weight
decay is chosen on the validation split, never on test. The same runs for `random_seeds` twins of the
backbone (same architecture, width and input; for a CFN, Caffe's fillers, the init its pretraining
started from, or He-normal with `twin_init="msra"`; other backbones He-normal), so every row of
probe.csv is a pair measured in one run: layer, dims, pretrained test accuracy, random mean ± SE.
The init matters: untrained CFNs with Caffe's fillers beat He-init ones by 6-18 SE at conv2-conv5 on
Fashion-MNIST (RESULTS.md), so the baseline's init is recorded in config.json.
"""
import copy
import csv
import json
import os
import warnings
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from tools.atomic import atomic_open, ensure_dir
from tools.errors import CaffeError

from .backbones import build_backbone
from .data import loaders
from .datasets import load_dataset


@dataclass
class ProbeConfig:
    dataset: str
    model: str
    out: str
    weights: Optional[str] = None
    data_root: Optional[str] = None
    random_seeds: int = 3
    twin_init: str = "caffe"     # CFN twins: "caffe" (the fillers pretraining starts from) or "msra" (He)
    target_dim: int = 9000
    weight_decays: tuple = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    lbfgs_iters: int = 60
    limit_train: Optional[int] = None
    val_fraction: float = 0.15
    batch_size: int = 256
    input_size: Optional[int] = None
    seed: int = 0
    device: str = "auto"
    progress: bool = True


def _pooled(t, target_dim):
    """(N, C, H, W) -> average-pooled to a g x g grid with C*g*g about target_dim; (N, D) as is."""
    if t.dim() == 2:
        return t
    c, h = t.shape[1], t.shape[2]
    g = int(min(h, max(1, round((target_dim / c) ** 0.5))))
    return F.adaptive_avg_pool2d(t, g).flatten(1)


def _probe_points(backbone, model_name):
    """(layer name, module, ReLU after it?) for each probed layer."""
    if model_name == "cfn":
        return [(b, backbone.block(b), True) for b in backbone.blocks]
    return [(b, backbone.block(b), False) for b in backbone.blocks]


@torch.no_grad()
def _extract(backbone, model_name, data, cache, tag, cfg, device):
    """Features of every probed layer for every split, written once to cache/TAG_LAYER_SPLIT.npy."""
    points = _probe_points(backbone, model_name)
    paths = {(layer, split): os.path.join(cache, f"{tag}_{layer}_{split}.npy")
             for layer, _, _ in points for split in data}
    paths.update({("labels", split): os.path.join(cache, f"labels_{split}.npy") for split in data})
    if all(os.path.exists(p) for p in paths.values()):
        return {k: np.load(p, mmap_mode="r") for k, p in paths.items()}
    backbone.eval().to(device)
    grabbed = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name, relu=relu:
                                     grabbed.__setitem__(name, F.relu(out) if relu else out))
             for name, m, relu in points]
    try:
        for split, loader in data.items():
            arrays, n, start, ys = {}, len(loader.dataset), 0, []
            for x, y in tqdm(loader, desc=f"features {tag} {split}", disable=not cfg.progress, leave=False):
                ys.append(y)
                backbone.features(x.to(device))
                for layer, _, _ in points:
                    f = _pooled(grabbed[layer].float(), cfg.target_dim).cpu().numpy()
                    if layer not in arrays:
                        arrays[layer] = np.lib.format.open_memmap(paths[(layer, split)] + ".tmp.npy", "w+",
                                                                  np.float16, (n, f.shape[1]))
                    arrays[layer][start:start + len(f)] = f
                start += len(x)
            for layer, a in arrays.items():
                a.flush()
                os.replace(paths[(layer, split)] + ".tmp.npy", paths[(layer, split)])
            with atomic_open(paths[("labels", split)], "wb") as f:  # what the loader gave, in order
                np.save(f, torch.cat(ys).numpy())
    finally:
        for h in hooks:
            h.remove()
    return {k: np.load(p, mmap_mode="r") for k, p in paths.items()}


def fit_logistic(x, y, n_classes, weight_decay, iters=60, seed=0):
    """Multinomial logistic regression, full-batch L-BFGS on (N, D) float32 features: cross-entropy
    plus weight_decay/2 * |W|^2 (biases free). Returns (W, b)."""
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(x.shape[1], n_classes, generator=g) * 1e-3).requires_grad_()
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach(), b.detach()


def _accuracy(x, y, w, b):
    return float(((x @ w + b).argmax(1) == y).float().mean())


def probe_layer(feats, labels, n_classes, cfg):
    """Test accuracy of the probe whose weight decay did best on validation; and every fit's scores."""
    train = torch.from_numpy(np.array(feats["train"], dtype=np.float32))
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    xs = {s: (torch.from_numpy(np.array(feats[s], dtype=np.float32)) - mean) / std for s in feats}
    fits = []
    for wd in cfg.weight_decays:
        w, b = fit_logistic(xs["train"], labels["train"], n_classes, wd, cfg.lbfgs_iters, cfg.seed)
        fits.append(dict(weight_decay=wd, val=_accuracy(xs["val"], labels["val"], w, b),
                         test=_accuracy(xs["test"], labels["test"], w, b)))
    best = max(fits, key=lambda f: f["val"])  # chosen on validation, never on test
    return best, fits


def _twin(backbone, seed, init="msra", model_name=""):
    """The same backbone with fresh weights: a CFN's Caffe fillers (init="caffe"), else He-normal
    weights and zero biases; other layers reset."""
    twin = copy.deepcopy(backbone)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if init == "caffe" and model_name == "cfn":
            from jigsaw.caffe_form import FILLERS
            for name in twin.blocks:
                std, bias = FILLERS[name]
                layer = twin.block(name)
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * std)
                layer.bias.fill_(bias)
            return twin
        for m in twin.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
            elif hasattr(m, "reset_parameters") and m is not twin:
                m.reset_parameters()
    return twin


def probe(cfg):
    """Run the probes; writes probe.csv, fits.csv, probe.png, config.json and the feature cache."""
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    if cfg.random_seeds < 2:
        raise CaffeError(f"random_seeds {cfg.random_seeds}: need at least 2 for a standard error")
    if cfg.twin_init not in ("caffe", "msra"):
        raise CaffeError(f"twin_init must be 'caffe' or 'msra', got '{cfg.twin_init}'")
    backbone = build_backbone(cfg.model, cfg.weights, **({"upto": "fc6"} if cfg.model == "cfn" else {}))
    size = cfg.input_size or backbone.input_size
    splits = load_dataset(cfg.dataset, cfg.data_root, cfg.val_fraction, cfg.seed, cfg.limit_train)
    classes = splits["train"].classes
    preprocess = getattr(backbone, "preprocess", None)
    data, stats = loaders(splits, size, backbone.in_channels, cfg.batch_size, 0, None, cfg.seed, None, preprocess)
    data["train"] = torch.utils.data.DataLoader(data["train"].dataset, batch_size=cfg.batch_size)  # in order
    ensure_dir(cfg.out)
    cache = os.path.join(cfg.out, "cache")
    ensure_dir(cache)
    with atomic_open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(dict(asdict(cfg), classes=classes, input_size=size, backbone=backbone.record,
                       input="the backbone's own" if preprocess else "standardised by the training split"),
                  f, indent=2)
    models = [("pretrained", backbone)] + [(f"random{s}", _twin(backbone, 1000 + s, cfg.twin_init, cfg.model))
                                           for s in range(cfg.random_seeds)]
    results, fit_rows = {}, []
    for tag, net in models:
        feats = _extract(net, cfg.model, data, cache, tag, cfg, device)
        labels = {s: torch.from_numpy(np.array(feats[("labels", s)], dtype=np.int64)) for s in data}
        for layer in backbone.blocks:
            best, fits = probe_layer({s: feats[(layer, s)] for s in data}, labels, len(classes), cfg)
            results[(tag, layer)] = (best, feats[(layer, "train")].shape[1])
            fit_rows += [dict(model=tag, layer=layer, **f) for f in fits]
    rows = _table(results, backbone.blocks, cfg.random_seeds, cfg.weight_decays)
    _write_csv(os.path.join(cfg.out, "probe.csv"), rows)
    _write_csv(os.path.join(cfg.out, "fits.csv"), fit_rows)
    from .plots import plot_probe
    plot_probe(rows, os.path.join(cfg.out, "probe.png"), f"{cfg.model} on {cfg.dataset}: linear probes")
    return rows


def _table(results, layers, n_random, grid=()):
    rows = []
    for layer in layers:
        best, dims = results[("pretrained", layer)]
        if len(grid) > 1 and best["weight_decay"] in (min(grid), max(grid)):
            warnings.warn(f"layer {layer}: the weight decay chosen on validation ({best['weight_decay']:g}) is at "
                          "the edge of the grid; widen --weight-decays", stacklevel=2)
        rand = np.array([results[(f"random{s}", layer)][0]["test"] for s in range(n_random)])
        se = rand.std(ddof=1) / np.sqrt(len(rand))
        rows.append(dict(layer=layer, dims=dims, pretrained=round(best["test"], 4),
                         random_mean=round(float(rand.mean()), 4), random_se=round(float(se), 4), n=len(rand),
                         margin_se=round(float((best["test"] - rand.mean()) / se), 2) if se > 0 else None,
                         pretrained_weight_decay=best["weight_decay"]))
    return rows


def _write_csv(path, rows):
    with atomic_open(path, "w") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
