"""Probes per layer, pretrained against random-init twins (Noroozi & Favaro 2016 Table 2 style; Zhang et al.
2017, Goyal et al. 2019): is the pretraining worth anything, and with how many labels?

Each net's frozen features (transfer/features.py) are cached once per net; on them run the protocols asked
for: a multinomial logistic regression per layer on every training label (full-batch L-BFGS on features
standardised with the training split's statistics, the weight decay chosen on the validation split, never
on test), a weighted kNN (knn.py), the low-shot probes (lowshot.py), or for a multi-label dataset VOC07's
SVMs (svm.py). The same runs for random-init twins of the backbone (twins.py: same architecture, width and
input; for a CFN, Caffe's fillers, the init its pretraining started from, or He-normal with
`twin_init="msra"`), so every row of a table is a pair measured in one run. Each net's results are kept
beside its features for the settings that made them: adding a pretraining seed or a twin computes only the
new nets. The init matters: untrained CFNs with Caffe's fillers beat He-init ones by 6-18 SE at
conv2-conv5 on Fashion-MNIST (RESULTS.md), so the baseline's init is recorded in config.json.
"""
import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from tools.run.atomic import atomic_open, ensure_dir
from tools.run.errors import UserError
from tools.run.folder import RunFolder
from tools.run.runtime import generator, resolve_device, use_bf16

from .backbones import build_backbone
from .config import ProbeConfig
from .data import loaders
from .datasets import load_dataset
from .features import extract, has_batchnorm, stamp
from .knn import knn_accuracy
from .lowshot import budget_name, fit_softmax, lowshot_layer, parse_budget
from .probe_tables import format_table, layer_rows, lowshot_rows, write_csv  # noqa: F401 (format_table: callers')
from .svm import svm_layer
from .twins import make_twin

PROTOCOLS = ("linear", "knn")
# the fits' arithmetic (2: the gradient by hand, a budget's draws solved as one stack): results of another
# solver differ at the optimiser's tolerance, so they are computed again rather than mixed into one table
FIT_SOLVER = 2


def fit_logistic(x, y, n_classes, weight_decay, iters=60, seed=0):
    """Multinomial logistic regression, full-batch L-BFGS on (N, D) float32 features: cross-entropy
    plus weight_decay/2 * |W|^2 (biases free). Returns (W, b)."""
    g = generator(seed)
    init = torch.randn(x.shape[1], n_classes, generator=g) * 1e-3, torch.zeros(n_classes)
    return fit_softmax(x, y, n_classes, weight_decay, init, max_iter=iters, tolerance_grad=1e-7, tolerance_change=1e-9)


def _accuracy(x, y, w, b):
    return float(((x @ w + b).argmax(1) == y).float().mean())


def _kept(cache, prefix, key, compute=None):
    """One net's result for these settings, kept in CACHE/PREFIX_DIGEST.json; computed (and kept) when it
    is missing, damaged or for other settings; None then without `compute`."""
    path = os.path.join(cache, f"{prefix}_{_digest(key)}.json")
    try:
        with open(path) as f:
            kept = json.load(f)
        if kept["key"] == json.loads(json.dumps(key)):
            return kept["value"]
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not ours to trust: compute again
        pass
    return None if compute is None else _keep(cache, prefix, key, compute())


def _keep(cache, prefix, key, value):
    with atomic_open(os.path.join(cache, f"{prefix}_{_digest(key)}.json"), "w") as f:
        json.dump(dict(key=key, value=value), f)
    return value


def _labels(feats, split):
    return torch.from_numpy(np.array(feats[("labels", split)], dtype=np.int64))


def say(text):
    """One line per step of a probe, with or without progress bars (a long probe is never silent)."""
    tqdm.write(f"probe: {text}")
    sys.stdout.flush()


def _probe_net(feats, layers, n_classes, cfg, cache, tag=""):
    """{layer: dict(dims, fits)} for one net: the full-label linear probes."""
    def compute():
        labels = {s: _labels(feats, s) for s in ("train", "val", "test")}
        out = {}
        for layer in layers:
            t = time.perf_counter()
            best, fits = probe_layer({s: feats[(layer, s)] for s in labels}, labels, n_classes, cfg)
            out[layer] = dict(dims=int(feats[(layer, "train")].shape[1]), fits=fits)
            say(f"{tag} {layer}: linear probe, {len(fits)} weight decays, chose {best['weight_decay']:g} on "
                f"validation: test {best['test']:.4f} ({time.perf_counter() - t:.1f} s)")
        return out
    key = dict(weight_decays=[float(w) for w in cfg.weight_decays], lbfgs_iters=cfg.lbfgs_iters, seed=cfg.seed,
               layers=list(layers), solver=FIT_SOLVER)
    return _kept(cache, "fits", key, compute)


def _knn_lowshot_net(feats, layers, n_classes, cfg, cache, budgets, tag=""):
    """({layer: accuracy} of the kNN on the whole training split, {layer: {budget: [per draw]}} of the
    low-shot probes (transfer/lowshot.py)); each kept apart, and computed from one similarity matrix per
    layer when neither is kept."""
    knn_key = dict(k=cfg.knn_k, temperature=cfg.knn_temperature, center=cfg.knn_features != "raw",
                   **({"standardised": True} if cfg.knn_features == "standardised" else {}), layers=list(layers))
    low_key = dict(knn_key, budgets=[budget_name(b) for b in budgets], draws=cfg.draws, seed=cfg.seed,
                   folds=cfg.cv_folds, weight_decays=[float(w) for w in cfg.lowshot_weight_decays], solver=FIT_SOLVER,
                   prototype=1)  # results kept before the prototype protocol lack it: computed again
    knn = _kept(cache, "knn", knn_key) if "knn" in cfg.protocols else {}
    low = _kept(cache, "lowshot", low_key) if budgets else {}
    if knn is not None and low is not None:
        return knn, low
    new_knn, new_low = {}, {}
    for layer in layers:
        train, test = feats[(layer, "train")], feats[(layer, "test")]
        labels = feats[("labels", "train")], feats[("labels", "test")]
        t = time.perf_counter()
        if low is None:
            new_low[layer], new_knn[layer] = lowshot_layer(
                train, labels[0], test, labels[1], n_classes, budgets, cfg.draws, cfg.seed,
                cfg.lowshot_weight_decays, cfg.cv_folds, cfg.knn_k, cfg.knn_temperature, cfg.knn_features,
                full_knn=knn is None)
        else:
            new_knn[layer] = knn_accuracy(train, labels[0], test, labels[1], n_classes, cfg.knn_k,
                                          cfg.knn_temperature, cfg.knn_features)
        done = [f"kNN {new_knn[layer]:.4f}" if new_knn.get(layer) is not None else ""] + \
            ([f"low-shot {len(budgets)} budget(s) x {cfg.draws} draws"] if low is None else [])
        say(f"{tag} {layer}: {', '.join(d for d in done if d)} ({time.perf_counter() - t:.1f} s)")
    return (_keep(cache, "knn", knn_key, new_knn) if knn is None else knn,
            _keep(cache, "lowshot", low_key, new_low) if low is None else low)


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


def _check(cfg):
    seeds = twin_seeds(cfg)
    if len(seeds) < 2 or len(set(seeds)) < len(seeds):
        raise UserError(f"twin seeds {seeds}: need at least two different seeds for a standard error")
    if not cfg.protocols:  # which ones: checked by ProbeConfig
        raise UserError(f"protocols {list(cfg.protocols)}: expected some of {', '.join(PROTOCOLS)}")
    per_class, fractions = ([parse_budget(b) for b in given] for given in (cfg.labels_per_class, cfg.label_fraction))
    if any(isinstance(b, float) for b in per_class):
        raise UserError(f"--labels-per-class {' '.join(map(str, cfg.labels_per_class))}: expected whole numbers "
                        "or 'all' (fractions go to --label-fraction)")
    if any(not isinstance(b, float) for b in fractions):
        raise UserError(f"--label-fraction {' '.join(map(str, cfg.label_fraction))}: expected fractions between 0 "
                        "and 1 (0.01 or 1%)")
    budgets = per_class + fractions
    if cfg.draws < 1 or cfg.cv_folds < 2:
        raise UserError(f"draws {cfg.draws}, cv_folds {cfg.cv_folds}: need at least 1 draw and 2 folds")
    return seeds, [b for b in dict.fromkeys(budgets) if b != "all"]


def twin_seeds(cfg):
    """The twins' seeds: --twin-seeds, else 1000, 1001, ... (--random-seeds of them)."""
    return list(cfg.twin_seeds) if cfg.twin_seeds else [1000 + s for s in range(cfg.random_seeds)]


def probe(cfg: ProbeConfig):
    """Run the probes; writes probe.csv + fits.csv (linear), knn.csv, probe.png (both, every label, chance),
    label_efficiency.csv + .png (low-shot budgets), voc07.csv (multi-label), timing.csv (seconds per net and
    stage), config.json and the feature cache. Returns {table name: rows}."""
    seeds, budgets = _check(cfg)
    device = resolve_device(cfg.device)
    weights, pretrained = _pretrained(cfg)
    backbone = pretrained[0]
    size = cfg.input_size or backbone.input_size
    splits, data, preprocess = _labelled_data(cfg, backbone, size, budgets)
    classes = splits["train"].classes
    # two probes writing one folder would race on its caches and tables
    with RunFolder(cfg.out, "transfer probe", state=()) as folder:
        common, nets = _net_caches(cfg, backbone, size, device, weights, pretrained, seeds)
        folder.open()  # a probe re-run in its folder reuses the feature caches; its record is rewritten
        folder.write(dict(asdict(cfg), twin_seeds=seeds, classes=classes, input_size=size, backbone=backbone.record,
                          input="the backbone's own" if preprocess else "standardised by the training split",
                          features={t: os.path.relpath(c, cfg.out) for t, _, _, c in nets}))
        sample = next(iter(data["train"]))[0]  # a CFN's He twins start at the scale its pretraining did
        results = _Results()
        for k, (tag, net, ident, cache) in enumerate(nets):
            if net is None:  # built only now: a twin's weights are not kept in memory beside the others'
                net = make_twin(backbone, ident["twin"], cfg.twin_init, cfg.model, sample)
            _probe_one(cfg, f"[{k + 1}/{len(nets)}] {tag}", tag, net, dict(common, **ident), cache, splits, data,
                       backbone.blocks, len(classes), budgets, device, results)
        write_csv(os.path.join(cfg.out, "timing.csv"), results.timing)
        tags = [tag for tag, _, ident, _ in nets if "twin" not in ident]
        twins = [tag for tag, _, ident, _ in nets if "twin" in ident]
        lowshot = {tag: got for tag, got in results.lowshot.items() if got}
        return _report(cfg, backbone.blocks, len(classes), tags, twins, results.dims, results.linear,
                       results.fit_rows, results.knn, lowshot, results.svm)


def _pretrained(cfg):
    """(weights files, their backbones): the runs of one probe must share the architecture and the recipe."""
    kw = {"upto": "fc6"} if cfg.model == "cfn" else {}
    weights = list(cfg.weights) if isinstance(cfg.weights, (list, tuple)) else [cfg.weights]
    pretrained = [build_backbone(cfg.model, w, **kw) for w in weights]
    for w, other in zip(weights[1:], pretrained[1:]):
        if other.record.get("recipe") != pretrained[0].record.get("recipe") or \
                [p.shape for p in other.parameters()] != [p.shape for p in pretrained[0].parameters()]:
            raise UserError(f"{w}: not the same architecture and recipe as {weights[0]}; the pretrained "
                             "runs of one probe must differ only in their seed")
    return weights, pretrained


def _labelled_data(cfg, backbone, size, budgets):
    """(splits, their loaders, the backbone's own preprocessing or None), after what no protocol could run on
    is said: low-shot budgets on a multi-label set, or more labels per class than the smallest class holds."""
    splits = load_dataset(cfg.dataset, cfg.data_root, cfg.val_fraction, cfg.seed, cfg.limit_train, cfg.limit_test,
                          cfg.limit_val)
    classes = splits["train"].classes
    multilabel = np.ndim(splits["train"].labels) == 2
    if multilabel and budgets:
        raise UserError(f"{cfg.dataset} is multi-label: it is probed with VOC07's SVMs on all of trainval; low-shot "
                        "budgets are for single-label datasets")
    per_class = [b for b in budgets if isinstance(b, int)]
    fewest = 0 if multilabel else int(np.bincount(splits["train"].labels, minlength=len(classes)).min())
    if per_class and max(per_class) > fewest:  # said now, not after every net's features
        raise UserError(f"--labels-per-class {max(per_class)}: the training split has {fewest} images of its "
                        "smallest class; ask for fewer or raise --limit-train")
    preprocess = getattr(backbone, "preprocess", None)
    data, _ = loaders(splits, size, backbone.in_channels, cfg.batch_size, seed=cfg.seed, preprocess=preprocess)
    data["train"] = torch.utils.data.DataLoader(data["train"].dataset, batch_size=cfg.batch_size)  # in order
    if "linear" not in cfg.protocols and not multilabel:
        del data["val"]  # only the full-label linear probe reads it: its features are not extracted
    return splits, data, preprocess


def _net_caches(cfg, backbone, size, device, weights, pretrained, seeds):
    """(what every net's features depend on, [(tag, net or None for a twin, its identity, its cache folder)])."""
    # a net's features depend on it and on all of these: another setting gets its own cache, never a stale one
    # (limit_test and limit_val only when given: the caches made before they existed stay valid)
    common = dict(model=cfg.model, size=size, target_dim=cfg.target_dim, limit_train=cfg.limit_train,
                  **{k: getattr(cfg, k) for k in ("limit_test", "limit_val") if getattr(cfg, k)},
                  **({"bf16": True} if use_bf16(cfg.precision, device) else {}),
                  val_fraction=cfg.val_fraction, seed=cfg.seed, dataset=cfg.dataset, data_root=cfg.data_root,
                  version=3, **({"bn_images": cfg.bn_images} if has_batchnorm(backbone) else {}))
    # a twin depends on the architecture and the input it is scaled to, not on which weights file gave them
    shape = dict(shapes=[list(p.shape) for p in backbone.parameters()],
                 record={k: v for k, v in backbone.record.items() if k != "recipe_source"})
    tags = ["pretrained"] if len(pretrained) == 1 else [f"pretrained{i}" for i in range(len(pretrained))]
    nets = [(tag, net, dict(weights=str(w), stamp=stamp(w))) for tag, net, w in zip(tags, pretrained, weights)]
    nets += [(f"random{i}", None, dict(twin=s, init=cfg.twin_init, **shape)) for i, s in enumerate(seeds)]
    return common, [(tag, net, ident, os.path.join(cfg.out, "cache", _digest(dict(common, **ident))))
                    for tag, net, ident in nets]


class _Results:
    """What the nets' probes add up to: linear, kNN, low-shot and SVM results by (net, layer), each layer's
    dimensions, every linear fit's row, and each net's seconds per stage."""

    def __init__(self):
        self.linear, self.fit_rows, self.knn, self.lowshot, self.dims, self.svm, self.timing = \
            {}, [], {}, {}, {}, {}, []


def _probe_one(cfg, step, tag, net, identity, cache, splits, data, layers, n_classes, budgets, device, results):
    """One net: its features (cached), then each protocol asked for on them, added to `results`."""
    ensure_dir(cache)
    if not os.path.exists(os.path.join(cache, "net.json")):
        with atomic_open(os.path.join(cache, "net.json"), "w") as f:  # what this folder holds, for people
            json.dump(identity, f, indent=2)
    multilabel = np.ndim(splits["train"].labels) == 2
    clock = [time.perf_counter()]
    say(f"{step}: features of {len(layers)} layers ({', '.join(f'{len(splits[s])} {s}' for s in data)} "
        "images; kept ones are read from its cache)")
    feats = extract(net, cfg.model, data, cache, tag, cfg, device)
    clock.append(time.perf_counter())
    say(f"{step}: features ready ({clock[-1] - clock[-2]:.1f} s)")
    results.dims.update({layer: int(feats[(layer, "train")].shape[1]) for layer in layers})
    if multilabel:
        results.svm.update({(tag, layer): got for layer, got in _svm_net(feats, layers, cfg, cache).items()})
    if "linear" in cfg.protocols and not multilabel:
        for layer, got in _probe_net(feats, layers, n_classes, cfg, cache, tag).items():
            results.linear[(tag, layer)] = _best(got["fits"])
            results.fit_rows += [dict(model=tag, layer=layer, **f) for f in got["fits"]]
    clock.append(time.perf_counter())
    if ("knn" in cfg.protocols or budgets) and not multilabel:
        full, results.lowshot[tag] = _knn_lowshot_net(feats, layers, n_classes, cfg, cache, budgets, tag)
        results.knn.update({(tag, layer): a for layer, a in full.items()})
    clock.append(time.perf_counter())
    seconds = [round(b - a, 1) for a, b in zip(clock, clock[1:])]  # a kept result costs ~0
    results.timing.append(dict(net=tag, features_s=seconds[0], linear_or_svm_s=seconds[1],
                               knn_and_lowshot_s=seconds[2]))


def _svm_net(feats, layers, cfg, cache):
    """{layer: VOC07 result} for one net: SVMs on trainval (the training and validation splits together)."""
    def compute():
        targets = np.concatenate([np.asarray(feats[("labels", s)]) for s in ("train", "val")])
        return {layer: svm_layer(np.concatenate([np.asarray(feats[(layer, s)]) for s in ("train", "val")]), targets,
                                 feats[(layer, "test")], feats[("labels", "test")], cfg.svm_costs, cfg.cv_folds,
                                 cfg.seed) for layer in layers}
    key = dict(costs=[float(c) for c in cfg.svm_costs], folds=cfg.cv_folds, seed=cfg.seed, layers=list(layers),
               solver=FIT_SOLVER)
    return _kept(cache, "svm", key, compute)


def _report(cfg, layers, n_classes, tags, twins, dims, linear, fit_rows, knn, lowshot, svm):
    """Every table's CSV (and plot) in cfg.out; {table name: rows}."""
    from .plots import plot_gain, plot_label_efficiency, plot_probe
    out, title = {}, f"{cfg.model} on {cfg.dataset}"
    if svm:
        out["svm"] = layer_rows({k: v["map"] for k, v in svm.items()}, layers, tags, twins, dims)
        write_csv(os.path.join(cfg.out, "voc07.csv"), out["svm"])
    if linear:
        rows = layer_rows({k: v["test"] for k, v in linear.items()}, layers, tags, twins, dims)
        for r in rows:
            decays = [linear[(t, r["layer"])]["weight_decay"] for t in tags]
            edges = (min(cfg.weight_decays), max(cfg.weight_decays))
            if len(cfg.weight_decays) > 1 and any(d in edges for d in decays):
                warnings.warn(f"layer {r['layer']}: the weight decay chosen on validation "
                              f"({'/'.join(f'{d:g}' for d in decays)}) is at the edge of the grid; widen "
                              "--weight-decays", stacklevel=2)
            r["pretrained_weight_decay"] = decays[0] if len(decays) == 1 else "/".join(f"{d:g}" for d in decays)
        write_csv(os.path.join(cfg.out, "probe.csv"), rows)
        write_csv(os.path.join(cfg.out, "fits.csv"), fit_rows)
        out["linear"] = rows
    if knn:
        out["knn"] = layer_rows(knn, layers, tags, twins, dims)
        write_csv(os.path.join(cfg.out, "knn.csv"), out["knn"])
    full = {name: out[name] for name in ("linear", "knn") if name in out}
    if full:
        plot_probe(full, os.path.join(cfg.out, "probe.png"),
                   f"{title}: {' and '.join('linear probes' if n == 'linear' else 'kNN' for n in full)}, every label",
                   chance=1 / n_classes)
    if lowshot:
        full = {name: {k: (v["test"] if name == "linear" else v) for k, v in scores.items()}
                for name, scores in (("linear", linear), ("knn", knn)) if scores}
        out["lowshot"] = lowshot_rows(lowshot, full, layers, tags, twins, dims, n_classes)
        write_csv(os.path.join(cfg.out, "label_efficiency.csv"), out["lowshot"])
        plot_label_efficiency(out["lowshot"], os.path.join(cfg.out, "label_efficiency.png"), title, 1 / n_classes)
        plot_gain({layer: [r for r in out["lowshot"] if r["layer"] == layer] for layer in layers},
                  os.path.join(cfg.out, "label_efficiency_gain.png"), title)
    return out
