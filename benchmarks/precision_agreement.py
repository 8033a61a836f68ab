"""Does the fast mode learn the same? The same `jigsaw train` run in fp32 and in bf16, and a second fp32
run with another seed as the yardstick for noise; held-out pretext accuracy compared point by point.

    python benchmarks/precision_agreement.py [--device cuda] [--iters 3000] [--out precision-out]

Data: crops of scikit-image's photographs (training and held-out photographs apart), or your own
--data / --val-data stores. Verdict: the bf16-vs-fp32 gap must stay within the seed-to-seed gap, or
within three standard errors of a difference of two held-out accuracies, whichever is larger.
"""
import argparse
import csv
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jigsaw.permutations import make_permutations, save_permutations  # noqa: E402
from jigsaw.store import prepare  # noqa: E402
from jigsaw.train import TrainConfig, train  # noqa: E402
from tools.run.atomic import atomic_open  # noqa: E402
from sample_photos import HELD_OUT, TRAIN, write_photos  # noqa: E402


def photo_stores(out):
    stores = [os.path.join(out, f"{s}.h5") for s in ("train", "held_out")]
    for names, store in zip((TRAIN, HELD_OUT), stores):
        if not os.path.exists(store):
            folder = store[:-3]
            write_photos(folder, names, 64)
            prepare(folder, store, progress=False, layout="square")
    return stores


def val_curve(run):
    with open(os.path.join(run, "val.csv")) as f:
        return {int(r["iter"]): float(r["top1"]) for r in csv.DictReader(f)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="precision-out")
    ap.add_argument("--data", help="training store (default: crops of scikit-image's photographs)")
    ap.add_argument("--val-data", help="held-out store (default: crops of two other photographs)")
    ap.add_argument("--iters", type=int, default=None, help="default 3000 CUDA, 300 CPU")
    ap.add_argument("--width", type=float, default=None, help="default 1.0 CUDA, 0.125 CPU")
    ap.add_argument("--batch", type=int, default=None, help="default 128 CUDA, 16 CPU")
    ap.add_argument("--perms", type=int, default=None, help="permutations (default 100 CUDA, 8 CPU)")
    ap.add_argument("--points", type=int, default=10, help="validation points along the run")
    args = ap.parse_args()
    if args.val_data and not args.data:
        ap.error("--val-data needs --data (your training store)")
    cuda = args.device.startswith("cuda")
    iters, width = args.iters or (3000 if cuda else 300), args.width or (1.0 if cuda else 0.125)
    batch, n_perms = args.batch or (128 if cuda else 16), args.perms or (100 if cuda else 8)
    os.makedirs(args.out, exist_ok=True)
    train_store, val_store = (args.data, args.val_data) if args.data else photo_stores(args.out)
    perms = os.path.join(args.out, f"perms{n_perms}.npy")
    save_permutations(perms, make_permutations(n_perms, seed=0))
    interval = max(1, iters // args.points)
    test_iter = max(1, 512 // batch)
    solver = os.path.join(args.out, "solver.prototxt")
    with open(solver, "w") as f:  # the demo's recipe: Adam, He init, mean/std tiles (a fast start)
        f.write(f'type: "Adam" base_lr: 0.001 momentum: 0.9 lr_policy: "fixed" max_iter: {iters} '
                f'test_interval: {interval} test_iter: {test_iter} test_initialization: true display: 0 '
                f'snapshot: 0 snapshot_after_train: false\n')
    runs = {"fp32": ("fp32", 0), "bf16": ("bf16", 0), "fp32 seed 1": ("fp32", 1)}
    curves = {}
    for name, (precision, seed) in runs.items():
        run = os.path.join(args.out, name.replace(" ", "_"))
        if not os.path.exists(os.path.join(run, "val.csv")) or len(val_curve(run)) < args.points + 1:
            if os.path.exists(run):
                import shutil
                shutil.rmtree(run)
            print(f"training {name} ...", flush=True)
            train(TrainConfig(data=train_store, val_data=val_store, permutations=perms, out=run, solver=solver,
                              batch_size=batch, width=width, dropout=0.0, init="msra", recipe="bbrattoli",
                              seed=seed, device=args.device, precision=precision, progress=False))
        curves[name] = val_curve(run)
    n_val = test_iter * batch
    its = sorted(set.intersection(*(set(c) for c in curves.values())))
    print(f"\ndevice: {torch.cuda.get_device_name() if cuda else f'CPU ({os.cpu_count()} cores)'}; "
          f"width {width}; batch {batch}; {n_perms} permutations (chance {1 / n_perms:.3f}); "
          f"{n_val} held-out puzzles per point")
    print(f"{'iter':>6s} {'fp32':>7s} {'bf16':>7s} {'fp32 s1':>8s} {'|bf16-fp32|':>12s} {'|s1-fp32|':>10s} "
          f"{'3 SE':>6s}")
    gaps, seed_gaps, ok = [], [], True
    with open(os.path.join(args.out, "agreement.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["iter", "fp32", "bf16", "fp32_seed1", "gap_precision", "gap_seed", "three_se"])
        for it in its:
            a, b, c = (curves[k][it] for k in ("fp32", "bf16", "fp32 seed 1"))
            p = (a + b) / 2
            three_se = 3 * math.sqrt(2 * p * (1 - p) / n_val)
            gap, seed_gap = abs(b - a), abs(c - a)
            gaps.append(gap)
            seed_gaps.append(seed_gap)
            ok &= gap <= max(seed_gap, three_se)
            w.writerow([it, a, b, c, gap, seed_gap, three_se])
            print(f"{it:>6d} {a:>7.3f} {b:>7.3f} {c:>8.3f} {gap:>12.3f} {seed_gap:>10.3f} {three_se:>6.3f}")
    print(f"mean |bf16 - fp32| {sum(gaps) / len(gaps):.3f}; mean |seed 1 - seed 0| "
          f"{sum(seed_gaps) / len(seed_gaps):.3f}; verdict: "
          f"{'agree within noise' if ok else 'DISAGREE beyond noise'}")
    _plot(curves, its, os.path.join(args.out, "agreement.png"), 1 / n_perms)


def _plot(curves, its, path, chance):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot(its, [curve[i] for i in its], marker="o", label=name)
    ax.axhline(chance, color="grey", ls=":", label="chance")
    ax.set_xlabel("iteration")
    ax.set_ylabel("held-out pretext top-1")
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
