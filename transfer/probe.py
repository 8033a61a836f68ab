"""Linear probes per layer, pretrained against random-init twins (Noroozi & Favaro 2016 Table 2 style;
Zhang et al. 2017, Goyal et al. 2019): is the pretraining worth anything?

A frozen backbone's activations after each block (after the ReLU for a CFN branch) are average-pooled
to about `target_dim` values, cached once on disk per net (float16; a run that adds a pretraining seed or
a twin computes only the new nets' features and fits), standardised with the training split's
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
import hashlib
import json
import os
import warnings
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from tools.atomic import atomic_open, ensure_dir
from tools.errors import UserError
from tools.runtime import resolve_device

from .backbones import build_backbone
from .config import ProbeConfig
from .data import loaders
from .datasets import load_dataset


def _pooled(t, target_dim):
    """(N, C, H, W) -> average-pooled to a g x g grid with C*g*g about target_dim; (N, D) as is."""
    if t.dim() == 2:
        return t
    if t.dim() == 3:  # (N, positions, D): a fully connected layer slid over a square map (fc6 on a large image)
        n, positions, d = t.shape
        side = int(round(positions ** 0.5))
        t = t.transpose(1, 2).reshape(n, d, side, side)
    c, h = t.shape[1], t.shape[2]
    g = int(min(h, max(1, round((target_dim / c) ** 0.5))))
    return F.adaptive_avg_pool2d(t, g).flatten(1)


def _stamp(path):
    """Size and mtime of a weights file (None for 'none' or a name): a rewritten file is a new one."""
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except (OSError, TypeError):
        return None


def _probe_points(backbone, model_name):
    """(layer name, module, ReLU after it?) for each probed layer."""
    if model_name == "cfn":
        return [(b, backbone.block(b), True) for b in backbone.blocks]
    return [(b, backbone.block(b), False) for b in backbone.blocks]


def _load_features(paths, data):
    """The cached arrays if every one is there, readable and of the split's length; None means extract
    again (a file lost, truncated or damaged is not an error the user must mend by hand)."""
    try:
        arrays = {k: np.load(p, mmap_mode="r") for k, p in paths.items()}
    except (OSError, ValueError, EOFError):
        return None
    for (layer, split), a in arrays.items():
        n = len(data[split].dataset)
        if a.shape[0] != n or (layer == "labels") != (a.ndim == 1):
            return None
    return arrays


@torch.no_grad()
def _extract(backbone, model_name, data, cache, tag, cfg, device):
    """Features of every probed layer for every split, written once to CACHE/LAYER_SPLIT.npy (one folder
    per net)."""
    points = _probe_points(backbone, model_name)
    paths = {(layer, split): os.path.join(cache, f"{layer}_{split}.npy")
             for layer, _, _ in points for split in data}
    paths.update({("labels", split): os.path.join(cache, f"labels_{split}.npy") for split in data})
    kept = _load_features(paths, data)
    if kept is not None:
        return kept
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


def _probe_net(feats, layers, n_classes, cfg, cache):
    """{layer: (best fit, dims, every fit)} for one net; kept in CACHE/fits_KEY.json for these fit settings."""
    key = dict(weight_decays=[float(w) for w in cfg.weight_decays], lbfgs_iters=cfg.lbfgs_iters, seed=cfg.seed)
    path = os.path.join(cache, f"fits_{_digest(key)}.json")
    try:
        with open(path) as f:
            kept = json.load(f)
        if kept["key"] == key and list(kept["layers"]) == list(layers):
            return {k: (_best(v["fits"]), v["dims"], v["fits"]) for k, v in kept["layers"].items()}
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not ours to trust: fit again
        pass
    labels = {s: torch.from_numpy(np.array(feats[("labels", s)], dtype=np.int64)) for s in ("train", "val", "test")}
    out = {}
    for layer in layers:
        split_feats = {s: feats[(layer, s)] for s in labels}
        best, fits = probe_layer(split_feats, labels, n_classes, cfg)
        out[layer] = (best, int(split_feats["train"].shape[1]), fits)
    with atomic_open(path, "w") as f:
        json.dump(dict(key=key, layers={k: dict(dims=d, fits=fs) for k, (_, d, fs) in out.items()}), f)
    return out


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
    return _best(fits), fits


def _best(fits):
    return max(fits, key=lambda f: f["val"])  # chosen on validation, never on test


def _digest(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _twin(backbone, seed, init="msra", model_name="", sample=None):
    """The same backbone with fresh weights: a CFN's Caffe fillers (init="caffe"), else He-normal
    weights and zero biases; other layers reset. A CFN's He twin has its weight layers divided by
    RMS(sample)^(1/8), as `jigsaw train --init msra` scales its eight layers to its tiles."""
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
        if model_name == "cfn" and sample is not None:  # the eight layers' share (CFN.scale_to_input)
            rms = float(sample.float().pow(2).mean().sqrt())
            for name in twin.blocks:
                twin.block(name).weight.div_(rms ** (1 / 8) if rms > 0 else 1.0)
    return twin


def probe(cfg: ProbeConfig):
    """Run the probes; writes probe.csv, fits.csv, probe.png, config.json and the feature cache."""
    device = resolve_device(cfg.device)
    if cfg.random_seeds < 2:
        raise UserError(f"random_seeds {cfg.random_seeds}: need at least 2 for a standard error")
    if cfg.twin_init not in ("caffe", "msra"):
        raise UserError(f"twin_init must be 'caffe' or 'msra', got '{cfg.twin_init}'")
    kw = {"upto": "fc6"} if cfg.model == "cfn" else {}
    weights = list(cfg.weights) if isinstance(cfg.weights, (list, tuple)) else [cfg.weights]
    pretrained = [build_backbone(cfg.model, w, **kw) for w in weights]
    backbone = pretrained[0]
    for w, other in zip(weights[1:], pretrained[1:]):
        if other.record.get("recipe") != backbone.record.get("recipe") or \
                [p.shape for p in other.parameters()] != [p.shape for p in backbone.parameters()]:
            raise UserError(f"{w}: not the same architecture and recipe as {weights[0]}; the pretrained "
                             "runs of one probe must differ only in their seed")
    size = cfg.input_size or backbone.input_size
    splits = load_dataset(cfg.dataset, cfg.data_root, cfg.val_fraction, cfg.seed, cfg.limit_train)
    classes = splits["train"].classes
    preprocess = getattr(backbone, "preprocess", None)
    data, stats = loaders(splits, size, backbone.in_channels, cfg.batch_size, 0, None, cfg.seed, None, preprocess)
    data["train"] = torch.utils.data.DataLoader(data["train"].dataset, batch_size=cfg.batch_size)  # in order
    ensure_dir(cfg.out)
    # a net's features depend on it and on all of these: another setting gets its own cache, never a stale one
    common = dict(model=cfg.model, size=size, target_dim=cfg.target_dim, limit_train=cfg.limit_train,
                  val_fraction=cfg.val_fraction, seed=cfg.seed, dataset=cfg.dataset, data_root=cfg.data_root, version=3)
    # a twin depends on the architecture and the input it is scaled to, not on which weights file gave them
    shape = dict(shapes=[list(p.shape) for p in backbone.parameters()],
                 record={k: v for k, v in backbone.record.items() if k != "recipe_source"})
    tags = ["pretrained"] if len(pretrained) == 1 else [f"pretrained{i}" for i in range(len(pretrained))]
    identities = [dict(weights=str(w), stamp=_stamp(w)) for w in weights]
    identities += [dict(twin=1000 + s, init=cfg.twin_init, **shape) for s in range(cfg.random_seeds)]
    caches = {tag: os.path.join(cfg.out, "cache", _digest(dict(common, **ident)))
              for tag, ident in zip(tags + [f"random{s}" for s in range(cfg.random_seeds)], identities)}
    with atomic_open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(dict(asdict(cfg), classes=classes, input_size=size, backbone=backbone.record,
                       input="the backbone's own" if preprocess else "standardised by the training split",
                       features={t: os.path.relpath(c, cfg.out) for t, c in caches.items()}), f, indent=2)
    sample = next(iter(data["train"]))[0]  # a CFN's He twins start at the scale its pretraining did
    models = list(zip(tags, pretrained)) + [(f"random{s}", _twin(backbone, 1000 + s, cfg.twin_init, cfg.model, sample))
                                           for s in range(cfg.random_seeds)]
    results, fit_rows = {}, []
    for (tag, net), ident in zip(models, identities):
        cache = ensure_dir(caches[tag])
        if not os.path.exists(os.path.join(cache, "net.json")):
            with atomic_open(os.path.join(cache, "net.json"), "w") as f:  # what this folder holds, for people
                json.dump(dict(common, **ident), f, indent=2)
        feats = _extract(net, cfg.model, data, cache, tag, cfg, device)
        for layer, (best, dims, fits) in _probe_net(feats, backbone.blocks, len(classes), cfg, cache).items():
            results[(tag, layer)] = (best, dims)
            fit_rows += [dict(model=tag, layer=layer, **f) for f in fits]
    rows = _table(results, backbone.blocks, tags, cfg.random_seeds, cfg.weight_decays)
    _write_csv(os.path.join(cfg.out, "probe.csv"), rows)
    _write_csv(os.path.join(cfg.out, "fits.csv"), fit_rows)
    from .plots import plot_probe
    plot_probe(rows, os.path.join(cfg.out, "probe.png"), f"{cfg.model} on {cfg.dataset}: linear probes")
    return rows


def _mean_se(values):
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def _table(results, layers, tags, n_random, grid=()):
    """One row per layer: pretrained (mean ± SE over `tags` when several), random mean ± SE, and the
    margin in standard errors of the difference (the random SE alone for one pretrained run)."""
    rows = []
    for layer in layers:
        bests = [results[(t, layer)][0] for t in tags]
        dims = results[(tags[0], layer)][1]
        for best in bests:
            if len(grid) > 1 and best["weight_decay"] in (min(grid), max(grid)):
                warnings.warn(f"layer {layer}: the weight decay chosen on validation ({best['weight_decay']:g}) "
                              "is at the edge of the grid; widen --weight-decays", stacklevel=2)
        p_mean, p_se = _mean_se([b["test"] for b in bests])
        r_mean, r_se = _mean_se([results[(f"random{s}", layer)][0]["test"] for s in range(n_random)])
        se = float(np.hypot(p_se, r_se))
        decays = [b["weight_decay"] for b in bests]
        rows.append(dict(layer=layer, dims=dims, pretrained=round(p_mean, 4), pretrained_se=round(p_se, 4),
                         pretrained_n=len(bests), random_mean=round(r_mean, 4), random_se=round(r_se, 4),
                         n=n_random, margin_se=round((p_mean - r_mean) / se, 2) if se > 0 else None,
                         pretrained_weight_decay=decays[0] if len(decays) == 1 else "/".join(f"{d:g}" for d in decays)))
    return rows


def format_table(rows, chance=None):
    """probe.csv's rows as the text table the command line and the benchmarks print."""
    k = rows[0].get("pretrained_n", 1)
    head = f"pretrained (n={k})" if k > 1 else "pretrained"
    lines = [f"{'layer':8s} {'dims':>6s} {head:>20s} {'random (mean ± SE, n=' + str(rows[0]['n']) + ')':>26s} "
             f"{'margin':>9s}"]
    for r in rows:
        p = f"{r['pretrained']:.4f} ± {r['pretrained_se']:.4f}" if k > 1 else f"{r['pretrained']:.4f}"
        margin = "" if r["margin_se"] is None else f"{r['margin_se']:+.1f} SE"
        lines.append(f"{r['layer']:8s} {r['dims']:6d} {p:>20s} {r['random_mean']:17.4f} ± {r['random_se']:.4f} "
                     f"{margin:>9s}")
    if chance is not None:
        lines.append(f"(chance {chance:.4f})")
    return "\n".join(lines)


def _write_csv(path, rows):
    with atomic_open(path, "w") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
