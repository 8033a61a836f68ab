"""Methods side by side in one protocol (issue 34's target): for each `benchmarks/ssl_probe.py` folder, every
pretrained net and every random twin is scored by the standardised kNN at its own best stage, the stage chosen on
validation draws from the training split, never on the test set; then pretrained seeds against twins and
against the other methods, at each budget, in points and SE over nets.

    python benchmarks/compare_methods.py pirl=/work/runs/pirl_r18 jigsaw=/work/runs/jig_r18 cfn=/work/ssl12k \
        --out /work/runs/compare      # also compare.csv and compare.png (gain over own twins, one colour a method)

Every net is read from its probe's feature cache (PROBE/cache/*/net.json): nothing is recomputed on images.
Validation: the probe's labelled training images are split once (seeded) into a bank pool and 2,000 validation
queries; `--draws` class-balanced draws of n labels per class from the bank pool, the standardised kNN (k 20,
T 0.07, the training split's statistics) on the queries; the stage with the best mean is the net's stage for
that budget. Test: the probe's own low-shot draws (transfer.lowshot.draw_labelled, the probe's seed) from every
training image, scored on the test split at that stage, averaged over draws. The same draws for every net."""
import argparse
import csv
import glob
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tools.run.atomic import atomic_open  # noqa: E402
from tools.run.runtime import numpy_rng  # noqa: E402
from transfer.knn import view, vote  # noqa: E402
from transfer.lowshot import draw_labelled  # noqa: E402

VAL_QUERIES = 2000


def nets_of(folder):
    """{'pretrained': [cache dirs], 'random': [cache dirs]} of an ssl_probe folder's in-domain probe."""
    found = {"pretrained": [], "random": []}
    for meta in sorted(glob.glob(os.path.join(folder, "probe_in_domain", "cache", "*", "net.json"))):
        with open(meta) as f:
            net = json.load(f)
        found["random" if "twin" in net else "pretrained"].append(os.path.dirname(meta))
    if not found["pretrained"] or len(found["random"]) < 2:
        raise SystemExit(f"{folder}: expected a probe_in_domain/cache with pretrained nets and >= 2 twins")
    return found


def stages_of(cache):
    return sorted({os.path.basename(p)[:-len("_train.npy")] for p in glob.glob(os.path.join(cache, "*_train.npy"))}
                  - {"labels"})


def knn_score(bank, bank_y, queries, query_y, n_classes=10):
    """Weighted-vote accuracy of unit `bank` rows (labels `bank_y`) on unit `queries`."""
    return float((vote(queries @ bank.T, torch.from_numpy(bank_y), n_classes) == torch.from_numpy(query_y))
                 .double().mean())


def score_net(cache, budgets, draws, seed):
    """{budget: (chosen stage, validation accuracy, test accuracy)} for one net."""
    y_train = np.load(os.path.join(cache, "labels_train.npy")).astype(np.int64)
    y_test = np.load(os.path.join(cache, "labels_test.npy")).astype(np.int64)
    order = numpy_rng(seed, 34).permutation(len(y_train))
    queries, pool = order[:VAL_QUERIES], order[VAL_QUERIES:]
    val_picks = {b: [pool[draw_labelled(y_train[pool], b, d, seed + 1)] for d in range(draws)] for b in budgets}
    test_picks = {b: [draw_labelled(y_train, b, d, seed) for d in range(draws)] for b in budgets}
    scores = {}  # (budget, stage) -> (validation, test)
    for stage in stages_of(cache):
        x = np.load(os.path.join(cache, f"{stage}_train.npy"))
        to_unit = view(x, "standardised")  # the training split's statistics, as the probe's kNN
        train, test = to_unit(x), to_unit(np.load(os.path.join(cache, f"{stage}_test.npy")))
        for b in budgets:
            val = np.mean([knn_score(train[p], y_train[p], train[queries], y_train[queries]) for p in val_picks[b]])
            scored = np.mean([knn_score(train[p], y_train[p], test, y_test) for p in test_picks[b]])
            scores[(b, stage)] = (float(val), float(scored))
    out = {}
    for b in budgets:
        stage = max((s for bb, s in scores if bb == b), key=lambda s: scores[(b, s)][0])
        out[b] = (stage, *scores[(b, stage)])
    return out


def mean_se(values):
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def gap(a, b):
    """(points, SE of the difference) between two (mean, SE) pairs."""
    se = math.hypot(a[1], b[1])
    return 100 * (a[0] - b[0]), (a[0] - b[0]) / se if se > 0 else float("inf")


def write_outputs(prefix, summary, counts, budgets):
    """PREFIX.csv (each method's pretrained nets and twins at each budget) and PREFIX.png: each method's gain over
    its own twins' chosen stages, ± the SE of the difference, one colour a method (transfer.plots.plot_gain)."""
    from transfer.plots import plot_gain
    series, rows = {}, []
    for name in dict.fromkeys(n for n, _ in summary):
        series[name] = []
        for b in budgets:
            (p, p_se), (r, r_se) = summary[(name, "pretrained")][b], summary[(name, "random")][b]
            points, n_se = gap((p, p_se), (r, r_se))
            rows.append(dict(method=name, labels_per_class=b, pretrained=p, pretrained_se=p_se,
                             pretrained_nets=counts[(name, "pretrained")], random_mean=r, random_se=r_se,
                             random_nets=counts[(name, "random")], gain_points=points, gain_se=n_se))
            series[name].append(dict(protocol="standardised kNN, stage chosen on validation", per_class=b,
                                     budget=str(b), pretrained=p, pretrained_se=p_se, random_mean=r, random_se=r_se))
    with atomic_open(prefix + ".csv", "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    plot_gain(series, prefix + ".png", "methods side by side")
    print(f"wrote {prefix}.csv, {prefix}.png")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="NAME=FOLDER: an ssl_probe output folder per method")
    ap.add_argument("--budgets", type=int, nargs="+", default=[1, 10], help="labels per class (1 10)")
    ap.add_argument("--draws", type=int, default=5, help="draws per budget, validation and test (5)")
    ap.add_argument("--seed", type=int, default=0, help="the probe's seed: its test draws (0)")
    ap.add_argument("--out", help="PREFIX: also write PREFIX.csv and PREFIX.png (gain over own twins per method)")
    args = ap.parse_args()
    runs = dict(r.split("=", 1) for r in args.runs)
    table = {}
    for name, folder in runs.items():
        for kind, caches in nets_of(folder).items():
            scored = [score_net(c, args.budgets, args.draws, args.seed) for c in caches]
            table[(name, kind)] = scored
            for b in args.budgets:
                chosen = ", ".join(s[b][0] for s in scored)
                print(f"{name:10s} {kind:10s} {b:3d}/class  stages chosen on validation: {chosen}")
    print("\nstandardised kNN (k 20, T 0.07) at each net's stage chosen on validation draws; test accuracy, "
          "mean ± SE over nets")
    print(f"{'method':10s} {'nets':10s} " + "".join(f"{str(b) + '/class':>22s}" for b in args.budgets))
    summary = {}
    for (name, kind), scored in table.items():
        summary[(name, kind)] = {b: mean_se([s[b][2] for s in scored]) for b in args.budgets}
        print(f"{name:10s} {kind + f' n={len(scored)}':10s} " + "".join(
            f"{summary[(name, kind)][b][0]:>13.4f} ± {summary[(name, kind)][b][1]:.4f}" for b in args.budgets))
    print("\npretrained minus comparator (points, SE of the difference)")
    for name in runs:
        for other, kind in [(name, "random")] + [(o, "pretrained") for o in runs if o != name]:
            row = [gap(summary[(name, "pretrained")][b], summary[(other, kind)][b]) for b in args.budgets]
            print(f"{name:10s} vs {other + ' ' + kind:22s}" + "".join(f"{p:>+10.1f} pt {s:>+6.1f} SE"
                                                                        for p, s in row))
    if args.out:
        write_outputs(args.out, summary, {k: len(v) for k, v in table.items()}, args.budgets)


if __name__ == "__main__":
    main()
