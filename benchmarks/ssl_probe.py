"""In-domain probe benchmark: CFNs pretrained on Fashion-MNIST's 60,000 training images without their
labels, then probes per layer with the labels, against random-init twins (README: Small images): linear
probes and a weighted kNN with every label, and low-shot linear probes and kNN with 1, 5, 10, 50 and 100
labels per class (5 seeded draws each).

    python benchmarks/ssl_probe.py --out /tmp/ssl                       # about 65 min on 2 CPU cores
    python benchmarks/ssl_probe.py --out /tmp/ssl --cross-domain demo-out/pretrain/last.pt
    python benchmarks/ssl_probe.py --out /tmp/ssl --pretrain-seeds 6 --random-seeds 6   # adds 3 + 3 nets
    python benchmarks/ssl_probe.py --out /tmp/ssl12k --iters 12000 --stepsize 4800 \
        --pretrain-seeds 3 --random-seeds 3        # about 2 h 20 min: beats random by > 3 SE at conv2-conv5
    python benchmarks/ssl_probe.py --out /tmp/ssl12k ... --protocols knn    # kNN and low-shot only: 2.5 min a net

A rerun on the same --out keeps what is done: finished pretraining runs, and each net's probe features
and fits, so more seeds cost only the new runs and nets.

Geometry for 28 px images (the jps proportions at half scale): each image upscaled to 128 px
(`jigsaw prepare --layout square --size 128 --min-side 16`), a 126 px crop of 3x3 cells of 42 px, 32 px
tiles at offsets 0..10 (`--cell 42 --tile 32`): a cell is 9.2 of the original pixels, a tile 7. The
branch is the CFN's own (conv1 11x11 stride 2 ... pool5) on 32 px tiles; the probe feeds it whole
images at 128 px, the scale its tiles had in pretraining, and the twins the same. Every step is the
product's own command line, printed before it runs; finished steps are kept and skipped on a rerun.

The images are stored at 160 px (`--store-size`; the geometry below is given for 128, the first choice),
so the 126 px crop moves the object by up to 34 px: at 128 it barely moves, the object's outline names
each tile's cell, and the features stay at random's level from conv2 on (RESULTS.md). The report also gives each
run's pretext accuracy on unseen test images and on their silhouettes: the share a net solves from the
outline alone.
"""
import argparse
import csv
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from tools.run.atomic import atomic_open  # noqa: E402


def sh(*args, capture=False):
    """Run one of the product's commands (its output returned when `capture`); if it fails, stop here with
    its exit code (it has said why)."""
    cmd = [sys.executable, "-m", *map(str, args)]
    print("$ " + " ".join(["python", "-m", *map(str, args)]), flush=True)
    r = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE if capture else None, text=True)
    if r.returncode:
        print(f"ssl_probe: stopped: the command above exited {r.returncode}; what is finished is kept for a rerun",
              file=sys.stderr)
        sys.exit(r.returncode)
    return r.stdout


def write_pngs(folder):
    """The training images as the folder of unlabeled PNGs a user would have."""
    import numpy as np
    from PIL import Image

    from transfer.datasets import load_idx_dataset
    images = load_idx_dataset(None)["train"].images
    tmp = folder + ".partial"
    os.makedirs(tmp, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(np.asarray(im)).save(os.path.join(tmp, f"{i:05d}.png"))
    os.replace(tmp, folder)


def write_test_pngs(folder, count=2000):
    """The first `count` test images as PNGs, and as silhouettes (every pixel over 10 set to 255): puzzles
    a net solves from the silhouettes alone are solved from the object's outline, a layout shortcut."""
    import numpy as np
    from PIL import Image

    from transfer.datasets import load_idx_dataset
    images = load_idx_dataset(None)["test"].images[:count]
    for name, f in (("plain", lambda a: a), ("silhouette", lambda a: np.where(a > 10, 255, 0).astype(np.uint8))):
        tmp = os.path.join(folder, name + ".partial")
        os.makedirs(tmp, exist_ok=True)
        for i, im in enumerate(images):
            Image.fromarray(f(np.asarray(im))).save(os.path.join(tmp, f"{i:04d}.png"))
        os.replace(tmp, os.path.join(folder, name))


def shortcut_table(out, runs, store_size):
    """Pretext top-1 of each run on unseen test images and on their silhouettes (`jigsaw evaluate`)."""
    folder = os.path.join(out, "shortcut")
    if not os.path.isdir(os.path.join(folder, "silhouette")):
        os.makedirs(folder, exist_ok=True)
        write_test_pngs(folder)
    lines = ["pretext top-1 on 2,000 unseen test images      as they are   silhouettes only"]
    for run in runs:
        got = []
        for name in ("plain", "silhouette"):
            store = os.path.join(folder, f"{name}{store_size}.h5")
            if not os.path.exists(store):
                sh("jigsaw.cli", "prepare", os.path.join(folder, name), "-o", store, "--layout", "square",
                   "--size", store_size, "--min-side", 16)
            said = sh("jigsaw.cli", "evaluate", "--weights", run, "--data", store, "--batch-size", 100, capture=True)
            got.append(float(said.split("top-1 ")[1].split(",")[0]))
        lines.append(f"{os.path.basename(os.path.dirname(run)):46s} {got[0]:11.4f} {got[1]:18.4f}")
    return "\n".join(lines)


def finished(run, iters):
    """The run reached max_iter (its last.pt holds it)."""
    path = os.path.join(run, "last.pt")
    if not os.path.exists(path):
        return False
    from jigsaw.checkpoint import run_iteration
    return run_iteration(path) >= iters


def table(path):
    """A probe table's CSV (probe.csv, knn.csv, label_efficiency.csv) as rows with numbers, and as text."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    from transfer.probe_tables import format_lowshot, format_table
    for r in rows:
        for k in ("dims", "n", "pretrained_n"):
            r[k] = int(r.get(k) or 1)
        for k in ("pretrained", "pretrained_se", "random_mean", "random_se", "random_sd"):
            r[k] = float(r.get(k) or 0)
        r["margin_se"] = float(r["margin_se"]) if r.get("margin_se") not in (None, "") else None
    return rows, (format_lowshot(rows) if rows and "budget" in rows[0] else format_table(rows))


def best_margins(rows):
    """Per protocol, the budget with the largest smallest margin (in SE) over conv2-conv5 (a trunk: its stages
    after the stem): where the
    pretraining helps most."""
    lines = []
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        scored = []
        for budget in dict.fromkeys(r["budget"] for r in rows if r["protocol"] == protocol):
            mine = {r["layer"]: r for r in rows if (r["protocol"], r["budget"]) == (protocol, budget)}
            inner = [c for c in mine if c not in ("conv1", "fc6", "stem")]  # the CFN's conv2-5, a trunk's stages
            convs = [mine[c] for c in inner]
            if convs and all(r["margin_se"] is not None for r in convs):
                scored.append((min(r["margin_se"] for r in convs), budget, convs))
        if scored:
            low, budget, convs = max(scored, key=lambda t: t[0])
            points = ", ".join(f"{r['layer']} {100 * (r['pretrained'] - r['random_mean']):+.1f} pt "
                               f"({r['margin_se']:+.1f} SE)" for r in convs)
            lines.append(f"{protocol}: most at {budget} labels per class: {points}; smallest margin {low:+.1f} SE")
    return "\n".join(lines)


def dead_features(probe_dir):
    """Per layer, the share of probe features that never vary over the training split (dead ReLU
    channels), pretrained vs random: a trained net that kills channels has fewer features to offer."""
    import glob
    import json

    import numpy as np
    with open(os.path.join(probe_dir, "config.json")) as f:
        features = json.load(f)["features"]  # this probe's nets: the cache may hold others'
    out = {}
    for tag, folder in features.items():
        for path in sorted(glob.glob(os.path.join(probe_dir, folder, "*_train.npy"))):
            layer = os.path.basename(path)[:-len("_train.npy")]
            if layer == "labels":
                continue
            a = np.load(path, mmap_mode="r")[:2000].astype(np.float32)
            out.setdefault(layer, {}).setdefault("random" if tag.startswith("random") else "pretrained", []).append(
                float((a.std(0) < 1e-6).mean()))
    lines = ["layer    dead features: pretrained   random"]
    for layer, d in out.items():
        lines.append(f"{layer:8s} {np.mean(d.get('pretrained', [0])):27.2f} {np.mean(d.get('random', [0])):8.2f}")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--pretrain-seeds", type=int, default=3, help="pretraining runs (default 3)")
    ap.add_argument("--random-seeds", type=int, default=3, help="random-init twins (default 3)")
    ap.add_argument("--iters", type=int, default=3000, help="pretraining iterations per run (3000)")
    ap.add_argument("--stepsize", type=int,
                    help="iterations between the learning rate's tenfold drops (default 0.8 x --iters)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument("--recipe", default="paper")
    ap.add_argument("--init", default="msra")
    ap.add_argument("--trunk", default="cfn", help="cfn, or a torchvision trunk (resnet18, ...) under VISSL's head")
    ap.add_argument("--method", default="jigsaw", choices=["jigsaw", "pirl"])
    ap.add_argument("--pirl-image-size", type=int, default=96, help="PIRL's image view (96 px)")
    ap.add_argument("--pirl-negatives", type=int, default=32000)
    ap.add_argument("--pirl-loss", default="nce", choices=["nce", "infonce"],
                    help="PIRL's loss (infonce: what learns on 60,000 images in a few epochs; RESULTS.md)")
    ap.add_argument("--monitor-every", type=int, default=0,
                    help="the kNN monitor (fashion-mnist test images) every N iterations (0: off)")
    ap.add_argument("--limit-train", type=int, default=5000, help="labelled images for the probes (5000)")
    ap.add_argument("--lbfgs-iters", type=int, default=40, help="L-BFGS iterations per probe fit (40)")
    ap.add_argument("--store-size", type=int, default=160,
                    help="side the images are upscaled to (default 160: the 126 px crop moves the object by up to "
                         "34 px; at 128 it barely moves, and the object's outline names each tile's cell)")
    ap.add_argument("--cross-domain", help="also probe this CFN checkpoint (e.g. the demo's) on Fashion-MNIST")
    ap.add_argument("--protocols", nargs="+", default=["linear", "knn"], choices=["linear", "knn"],
                    help="full-label protocols (default both; the linear fits are most of a probe's time)")
    ap.add_argument("--labels-per-class", nargs="*", default=["1", "5", "10", "50", "100", "all"],
                    help="low-shot budgets (default 1 5 10 50 100 all; none: no low-shot table)")
    ap.add_argument("--draws", type=int, default=5, help="labelled draws per low-shot budget (5)")
    ap.add_argument("--knn-features", default="standardised", choices=["standardised", "centred", "raw"],
                    help="what the kNN's cosine compares (standardised: the protocol every net is compared in)")
    ap.add_argument("--twin-seeds", type=int, nargs="+", help="the twins' seeds (default 1000, 1001, ...)")
    args = ap.parse_args()
    # Checked before the pretraining, not after it; display and snapshot intervals are iters/6 and iters/3.
    for name, least in (("pretrain_seeds", 1), ("random_seeds", 2), ("iters", 6), ("batch_size", 1),
                        ("limit_train", 1), ("lbfgs_iters", 1), ("draws", 1)):
        if getattr(args, name) < least:
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)}: expected at least {least}"
                     + (" (a standard error needs two twins)" if name == "random_seeds" else ""))
    if args.stepsize is not None and args.stepsize < 1:
        ap.error(f"--stepsize {args.stepsize}: expected a positive number of iterations")
    if args.store_size < 126:
        ap.error(f"--store-size {args.store_size}: the 3x3 grid of 42 px cells needs at least 126")
    from transfer.lowshot import parse_budget
    from tools.run.errors import UserError
    try:
        [parse_budget(b) for b in args.labels_per_class]
    except UserError as e:
        ap.error(str(e))
    if args.twin_seeds is not None and len(set(args.twin_seeds)) < 2:
        ap.error(f"--twin-seeds {' '.join(map(str, args.twin_seeds))}: expected at least two different seeds")
    if args.cross_domain and not os.path.isfile(args.cross_domain):
        ap.error(f"--cross-domain {args.cross_domain}: no such checkpoint file")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()

    pngs, store = os.path.join(out, "fmnist_png"), os.path.join(out, f"fmnist{args.store_size}.h5")
    if not os.path.exists(store):
        if not os.path.isdir(pngs):
            write_pngs(pngs)
        sh("jigsaw.cli", "prepare", pngs, "-o", store, "--layout", "square", "--size", args.store_size,
           "--min-side", 16)
    perms = os.path.join(out, f"perms{args.permutations}.npy")
    if not os.path.exists(perms):
        sh("jigsaw.cli", "permutations", "-n", args.permutations, "-o", perms)
    solver = os.path.join(out, "solver.prototxt")
    stepsize = args.stepsize or int(args.iters * 0.8)
    with atomic_open(solver, "w") as f:  # Adam: the Caffe-filler SGD start sits at chance for thousands of iterations
        f.write(f'type: "Adam" base_lr: 0.001 momentum: 0.9 momentum2: 0.999 weight_decay: 0.0005\n'
                f'lr_policy: "step" gamma: 0.1 stepsize: {stepsize} max_iter: {args.iters}\n'
                f"test_interval: {args.iters} test_iter: 8 test_initialization: false display: {args.iters // 6}\n"
                f"snapshot: {args.iters // 3}\n")
    runs = []
    net = [] if args.trunk == "cfn" else ["--trunk", args.trunk, "--method", args.method]
    if args.method == "pirl":
        net += ["--pirl-image-size", args.pirl_image_size, "--pirl-negatives", args.pirl_negatives,
                "--pirl-loss", args.pirl_loss]
    monitor = ["--monitor", "fashion-mnist", "--test-interval", args.monitor_every, "--monitor-size",
               args.store_size] if args.monitor_every else []
    for seed in range(args.pretrain_seeds):
        run = os.path.join(out, f"pretrain_seed{seed}")
        runs.append(os.path.join(run, "last.pt"))
        if finished(run, args.iters):
            continue
        resume = ["--resume"] if os.path.exists(os.path.join(run, "last.pt")) else []
        sh("jigsaw.cli", "train", "--data", store, "--permutations", perms, "--out", run, "--solver", solver,
           "--recipe", args.recipe, "--cell", 42, "--tile", 32, "--width", args.width, "--batch-size",
           args.batch_size, "--init", args.init, "--dropout", 0, "--seed", seed, "--no-progress", *net, *monitor,
           *resume)
    t_pre = time.time() - t0
    shortcut = shortcut_table(out, runs, args.store_size) if args.trunk == "cfn" else ""
    print(shortcut, flush=True)
    probe = os.path.join(out, "probe_in_domain")
    twins = ["--twin-seeds", *args.twin_seeds] if args.twin_seeds else ["--random-seeds", args.random_seeds]
    budgets = ["--labels-per-class", *args.labels_per_class] if args.labels_per_class else []
    sh("transfer.cli", "probe", "--dataset", "fashion-mnist", "--model", args.trunk, "--weights", *runs, "--out", probe,
       "--input-size", args.store_size, "--twin-init", args.init, *twins, "--limit-train", args.limit_train,
       "--lbfgs-iters", args.lbfgs_iters, "--protocols", *args.protocols, "--draws", args.draws, *budgets,
       "--knn-features", args.knn_features,
       "--no-progress")
    t_probe = time.time() - t0 - t_pre
    report = [f"in-domain (Fashion-MNIST at {args.store_size} px, {args.pretrain_seeds} pretraining seeds x "
              f"{args.iters} iterations, {len(args.twin_seeds or range(args.random_seeds))} twins, "
              f"{args.limit_train} labelled training images; chance 0.1000)"]
    tables = [(name, what) for name, what, asked in (
        ("probe.csv", "linear probes, every label, weight decay chosen on 9,000 validation images",
         "linear" in args.protocols),
        ("knn.csv", f"weighted kNN (k 20, T 0.07, {args.knn_features} features), every label as the bank",
         "knn" in args.protocols),
        ("label_efficiency.csv", f"low-shot ({args.draws} draws per budget; linear: weight decay by cross-validation "
                                 "inside the draw): pretrained minus random", bool(budgets))) if asked]
    rows = []
    for name, what in tables:  # what this run asked for: a file from an earlier run's settings is not reported
        got, text = table(os.path.join(probe, name))
        rows = rows or got
        report += [what, text]
        if name == "label_efficiency.csv":
            report.append(best_margins(got))
    report.append(dead_features(probe))
    with open(os.path.join(probe, "timing.csv")) as f:
        timing = list(csv.DictReader(f))
    report.append("probe seconds per net (0 where kept from an earlier run): features / linear fits / kNN and "
                  "low-shot\n" + "\n".join(f"{t['net']:12s} {float(t['features_s']):8.1f} "
                                             f"{float(t['linear_or_svm_s']):8.1f} {float(t['knn_and_lowshot_s']):8.1f}"
                                             for t in timing))
    report.append(shortcut)
    if args.cross_domain:
        cross = os.path.join(out, "probe_cross_domain")
        sh("transfer.cli", "probe", "--dataset", "fashion-mnist", "--model", "cfn", "--weights", args.cross_domain,
           "--out", cross, "--twin-init", args.init, "--random-seeds", args.random_seeds,
           "--limit-train", args.limit_train, "--lbfgs-iters", args.lbfgs_iters, "--no-progress")
        report += [f"cross-domain ({args.cross_domain} -> Fashion-MNIST)", table(os.path.join(cross, "probe.csv"))[1]]
    report.append(f"pretraining {t_pre / 60:.1f} min, probes {t_probe / 60:.1f} min, everything "
                  f"{(time.time() - t0) / 60:.1f} min")
    text = "\n\n".join(report)
    print("\n" + text)
    with atomic_open(os.path.join(out, "ssl_probe.txt"), "w") as f:
        f.write(text + "\n")
    beat = [r["layer"] for r in rows if r["margin_se"] is not None and r["margin_se"] > 3]
    print(f"layers where pretraining beats random by > 3 SE ({tables[0][0]}): {', '.join(beat) or 'none'}")


if __name__ == "__main__":
    main()
