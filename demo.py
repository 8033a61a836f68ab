"""`make demo`: the whole pipeline on built-in photographs and Fashion-MNIST, under 10 minutes on 2 CPU cores.

Fashion-MNIST comes from --data-root or $JIGSAW_FASHION_MNIST, else Debian's dataset-fashion-mnist, else an
earlier download, else its four published files (30 MB) are downloaded into ~/.cache/jigsaw/fashion-mnist
(transfer/downloads.py; --no-download: never); without it the demo says so first and falls back to photographs.

1. a permutation set; 2. a store prepared from real photographs shipped with scikit-image (CC0 / public
domain; sources written to OUT/photos/SOURCES.txt); 3. a narrow CFN pretrained for a few minutes (full
width on a GPU); 4. export to .prototxt + .caffemodel and import back, outputs compared; 5. its branch
fine-tuned on Fashion-MNIST or, without it, on a labelled set cut from the same photographs (which
photograph a crop comes from); 6. with Fashion-MNIST: a CFN
pretrained in-domain on 10,000 of its images without their labels (kNN monitor on), then kNN and low-shot
probes per layer against random-init twins, and a sentence saying whether the pretraining beat random;
without it, linear probes and kNN of the photographs' net against its twins; 7. a summary and the plots.
"""
import argparse
import os
import sys
import time
import warnings

import torch


# the in-domain step: Fashion-MNIST training images (unlabelled), pretraining iterations (about 3 min on 2 CPU
# cores; x4 on a GPU), then the probe's labelled training images, test images, budgets and draws
IN_DOMAIN = dict(images=10000, iters=2000, labelled=2000, test=2000, budgets=("10", "50"), draws=3,
                 monitor_per_class=50, monitor_queries=500)


def _fresh_run(folder, name, solver_text):
    """(run folder, solver path): the solver written beside it, and a finished earlier run cleared (the demo
    pretrains anew each time; what follows it starts over too)."""
    solver = os.path.join(folder, f"{name}_solver.prototxt")
    with open(solver, "w") as f:
        f.write(solver_text + "\n")
    run = os.path.join(folder, name)
    if os.path.exists(os.path.join(run, "last.pt")):
        import shutil
        shutil.rmtree(run)
    return run, solver


def step(title):
    print(f"\n== {title}", flush=True)
    return time.time()


def labelled_data(args):
    """Fashion-MNIST's folder, or None for the photographs' fallback; says which, before anything runs."""
    from tools.run.errors import DatasetError
    from transfer.downloads import fashion_mnist_folder
    if args.labelled == "photos":
        print("labelled data: crops labelled by photograph (--labelled photos): no in-domain verdict", flush=True)
        return None
    try:
        root, how = fashion_mnist_folder(args.data_root, download=not args.no_download)
    except DatasetError as e:
        if args.labelled == "fashion-mnist":
            sys.exit(f"demo.py: error: {e}")
        print(f"labelled data: FALLBACK to crops labelled by photograph, without the in-domain verdict: {e}",
              flush=True)
        return None
    print(f"labelled data: Fashion-MNIST in {root} ({how}): the in-domain verdict comes at step 6", flush=True)
    return root


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--iters", type=int, default=None, help="pretraining iterations (600 CPU, 3000 GPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--labelled", choices=["auto", "fashion-mnist", "photos"], default="auto",
                    help="fine-tuning set: Fashion-MNIST (auto: when found or downloaded), or crops labelled by "
                         "photograph")
    ap.add_argument("--data-root", help="Fashion-MNIST's folder (the four idx files; default: found or downloaded)")
    ap.add_argument("--no-download", action="store_true", help="never download Fashion-MNIST")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    fmnist = labelled_data(args)
    from jigsaw.permutations import hamming_stats, make_permutations, save_permutations
    from sample_photos import HELD_OUT, TRAIN, write_photos, write_sources
    from jigsaw.store import prepare
    from jigsaw.train import TrainConfig, train
    from tools import load_caffe_net
    from transfer.finetune import FinetuneConfig, finetune

    gpu = torch.cuda.is_available()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t_all = time.time()

    step("1. permutation set")
    perms = make_permutations(8, seed=args.seed)
    save_permutations(os.path.join(out, "perms.npy"), perms)
    mean, low = hamming_stats(perms)
    print(f"8 permutations, Hamming distance mean {mean:.2f}, min {low}")

    t = step("2. store from real photographs (scikit-image samples)")
    photos = os.path.join(out, "photos")
    if not os.path.exists(os.path.join(out, "train.h5")):
        write_photos(os.path.join(photos, "train"), TRAIN, 96)
        write_photos(os.path.join(photos, "held_out"), HELD_OUT, 96)
        write_sources(os.path.join(photos, "SOURCES.txt"), TRAIN + HELD_OUT)
        for split in ("train", "held_out"):
            n, skipped = prepare(os.path.join(photos, split), os.path.join(out, f"{split}.h5"), progress=False,
                                 layout="square")
            print(f"{split}: {n} images ({len(skipped)} skipped)")
    print(f"sources and licences: {os.path.join(photos, 'SOURCES.txt')} ({time.time() - t:.0f} s)")

    t = step(f"3. pretrain a {'full-width' if gpu else 'narrow (width 1/8)'} CFN")
    iters = args.iters or (3000 if gpu else 600)
    run, solver = _fresh_run(out, "pretrain", 'type: "Adam" base_lr: 0.001 momentum: 0.9 lr_policy: "step" gamma: 0.5 '
                             f"stepsize: {iters} max_iter: {iters} test_interval: {iters} test_iter: 16 "
                             f"test_initialization: true display: {max(iters // 4, 1)} snapshot: {iters}")
    metrics = train(TrainConfig(data=os.path.join(out, "train.h5"), val_data=os.path.join(out, "held_out.h5"),
                                permutations=os.path.join(out, "perms.npy"), out=run, solver=solver,
                                batch_size=32, width=1.0 if gpu else 0.125, dropout=0.0, init="msra",
                                recipe="bbrattoli", seed=args.seed, progress=False))
    print(f"pretext top-1 on held-out photographs: {metrics['top1']:.3f} (chance {1 / len(perms):.3f}) "
          f"({time.time() - t:.0f} s)")

    t = step("4. export to Caffe and import back")
    from jigsaw.caffe_form import from_caffe, to_caffe
    from jigsaw.checkpoint import read_cfn
    cfn = read_cfn(os.path.join(run, "last.pt"))[0]
    proto, model = os.path.join(out, "cfn.prototxt"), os.path.join(out, "cfn.caffemodel")
    to_caffe(cfn, proto, model)
    net = load_caffe_net(proto, model)
    x = torch.randn(2, 9, 3, 64, 64)
    with torch.no_grad():
        diff = (net(x.reshape(2, 27, 64, 64), outputs=["fc8"])["fc8"] - cfn(x)).abs().max().item()
        back = from_caffe(proto, model).eval()
        same = torch.equal(back(x), cfn(x))
    print(f"{proto} + {model}: max |fc8 difference| through tools.load_caffe_net {diff:.2e}; "
          f"from_caffe round trip identical: {same}")
    if diff > 1e-4 or not same:
        sys.exit("export/import check failed")

    t = step("5. fine-tune the branch")
    use_fmnist = fmnist is not None
    if use_fmnist:
        dataset, root, note = "fashion-mnist", fmnist, "Fashion-MNIST, 5,000 training images"
    else:
        dataset, root = "folder", os.path.join(photos, "by_photo")
        note = "which photograph a crop comes from (the fallback: no Fashion-MNIST)"
        for name in os.listdir(os.path.join(photos, "train")):
            cls = name.split("_")[0]
            os.makedirs(os.path.join(root, cls), exist_ok=True)
            dst = os.path.join(root, cls, name)
            if not os.path.exists(dst):
                os.link(os.path.join(photos, "train", name), dst)
    if os.path.isdir(os.path.join(out, "finetune")):  # a new pretraining: its fine-tune starts over too
        import shutil
        shutil.rmtree(os.path.join(out, "finetune"))
    summary, _ = finetune(FinetuneConfig(dataset=dataset, data_root=root, model="cfn",
                                         weights=os.path.join(run, "last.pt"), out=os.path.join(out, "finetune"),
                                         phase="both", limit_train=5000, epochs=6, batch_size=128,
                                         head_patience=2, finetune_patience=1, seed=args.seed, progress=False))
    print(f"{note}: test accuracy {summary['test_accuracy']:.4f} after {summary['epochs_run']} epochs "
          f"({time.time() - t:.0f} s)")

    if use_fmnist:
        verdict = in_domain(out, args.seed, gpu, fmnist)
    else:
        verdict = cross_domain(out, run, dataset, root, args.seed)

    step("7. summary")
    print(f"pretext accuracy (held-out photographs): {metrics['top1']:.3f} vs chance {1 / len(perms):.3f}")
    print(f"fine-tune test accuracy ({dataset}): {summary['test_accuracy']:.4f}")
    print(verdict)
    print(f"plots in {out}: {', '.join(p for p in plots_made(use_fmnist) if os.path.exists(os.path.join(out, p)))}")
    print(f"total {time.time() - t_all:.0f} s")


def plots_made(use_fmnist):
    """The PNGs the demo writes, relative to its output folder (lr.png only when a phase's rate changed)."""
    plots = ["pretrain/curves.png", "finetune/curves.png", "finetune/lr.png", "finetune/filters.png"]
    return plots + (["in_domain/pretrain/curves.png", "in_domain/probe/probe.png",
                     "in_domain/probe/label_efficiency.png"] if use_fmnist else ["probe/probe.png"])


def _margins(rows):
    """({layer: [points]} where the pretrained branch is above its twins by > 3 SE, the same where it is below by
    > 3 SE, comparisons per layer)."""
    above, below, count = {}, {}, {}
    for r in rows:
        count[r["layer"]] = count.get(r["layer"], 0) + 1
        if r["margin_se"] is not None and abs(r["margin_se"]) > 3:
            side = above if r["margin_se"] > 0 else below
            side.setdefault(r["layer"], []).append(100 * (r["pretrained"] - r["random_mean"]))
    return above, below, count


def _say(found, count):
    """'conv2 in 5 of 5 (+1.8 to +5.2 pt), ...'."""
    return ", ".join(f"{layer} in {len(found[layer])} of {n} ({min(found[layer]):+.1f}" +
                     (f" to {max(found[layer]):+.1f}" if len(found[layer]) > 1 else "") + " pt)"
                     for layer, n in count.items() if layer in found)


def in_domain(out, seed, gpu, root=None):
    """Fashion-MNIST's own images, without labels, pretrain a CFN (the small-image geometry of README: Small
    images); kNN and low-shot probes then compare its branch with three random twins. Returns the verdict."""
    plan = IN_DOMAIN
    import numpy as np
    from PIL import Image

    from jigsaw.permutations import make_permutations, save_permutations
    from jigsaw.store import prepare
    from jigsaw.train import TrainConfig, train
    from transfer.datasets import load_idx_dataset
    from transfer.monitor import from_config
    t = step("6. in-domain: a CFN pretrained on Fashion-MNIST's images (no labels) against random twins")
    base = os.path.join(out, "in_domain")
    store, pngs = os.path.join(base, "fmnist160.h5"), os.path.join(base, "unlabelled")
    if not os.path.exists(store):
        os.makedirs(pngs, exist_ok=True)
        for i, im in enumerate(load_idx_dataset(root)["train"].images[:plan["images"]]):
            Image.fromarray(np.asarray(im)).save(os.path.join(pngs, f"{i:05d}.png"))
        prepare(pngs, store, 160, progress=False, layout="square", min_side=16)
    perms = os.path.join(base, "perms100.npy")
    save_permutations(perms, make_permutations(100, seed=seed))
    iters = 4 * plan["iters"] if gpu else plan["iters"]
    run, solver = _fresh_run(base, "pretrain", 'type: "Adam" base_lr: 0.001 momentum: 0.9 momentum2: 0.999 '
                             f'weight_decay: 0.0005 lr_policy: "step" gamma: 0.1 stepsize: {int(iters * 0.8)} '
                             f"max_iter: {iters} test_interval: {iters // 2} test_iter: 8 test_initialization: false "
                             f"display: {iters // 4} snapshot: {iters}")
    cfg = TrainConfig(data=store, permutations=perms, out=run, solver=solver, recipe="paper", cell=42, tile=32,
                      width=0.25, batch_size=64, init="msra", dropout=0.0, seed=seed, monitor="fashion-mnist",
                      monitor_root=root, monitor_size=160, monitor_labels_per_class=plan["monitor_per_class"],
                      monitor_queries=plan["monitor_queries"], progress=False)
    metrics = train(cfg, from_config(cfg))
    print(f"{iters} iterations on {plan['images']:,} unlabelled images: pretext top-1 {metrics['top1']:.3f} "
          f"(chance 0.010) ({time.time() - t:.0f} s)")
    groups = _in_domain_probe(run, os.path.join(base, "probe"), plan, seed, root)
    return _in_domain_verdict(groups, iters, plan)


# The benchmark's protocol first: standardised kNN is where a pretrained and a random net are compared fairly
# (RESULTS.md); the centred kNN is shown beside it, labelled, as the README's conv4-fc6 sentence refers to both.
IN_DOMAIN_PROTOCOLS = ("standardised kNN", "centred kNN", "linear", "prototype")


def _in_domain_probe(run, folder, plan, seed, root):
    """{protocol label: label_efficiency rows}: the probe run with the centred kNN, then with the standardised
    one (last, so that the tables and plots left in `folder` are the benchmark's protocol); features computed once."""
    from transfer.probe import ProbeConfig, probe
    from transfer.probe_tables import format_lowshot
    t, groups = time.time(), {}
    for features in ("centred", "standardised"):
        tables = probe(ProbeConfig(dataset="fashion-mnist", data_root=root, model="cfn",
                                   weights=os.path.join(run, "last.pt"), out=folder, input_size=160,
                                   twin_init="msra", random_seeds=3, protocols=("knn",),
                                   labels_per_class=plan["budgets"], draws=plan["draws"], knn_features=features,
                                   limit_train=plan["labelled"], limit_test=plan["test"], seed=seed, progress=False))
        for r in tables["lowshot"]:
            if r["protocol"] == "knn" or features == "standardised":  # linear and prototype: the same both times
                label = f"{features} kNN" if r["protocol"] == "knn" else r["protocol"]
                groups.setdefault(label, []).append(r)
    print(f"pretrained minus random with {' and '.join(plan['budgets'])} labels per class ({plan['draws']} draws each; "
          f"kNN k 20, T 0.07; linear: weight decay by cross-validation inside the draw; prototype: nearest class "
          f"mean) and with every label ({plan['labelled']:,} labelled images), on {plan['test']:,} test images:")
    for label in IN_DOMAIN_PROTOCOLS:
        if label in groups:
            print(f"{label}:\n{format_lowshot(groups[label])}")
    print(f"({time.time() - t:.0f} s; {os.path.join(folder, 'probe.png')}, "
          f"{os.path.join(folder, 'label_efficiency.png')}: the standardised kNN's)")
    return groups


def _in_domain_verdict(groups, iters, plan):
    """One line per protocol: the layers where the pretraining beat random by > 3 SE, and where it was below."""
    lines = [f"in-domain ({iters} iterations without labels; against 3 random-init twins; "
             f"{', '.join(plan['budgets'])} labels per class and every label):"]
    for label in (p for p in IN_DOMAIN_PROTOCOLS if p in groups):
        above, below, count = _margins(groups[label])
        name = label + (" (the benchmark's protocol)" if label == "standardised kNN" else "")
        said = (f"beat random by > 3 SE at {_say(above, count)}" if above else
                "did NOT beat random by > 3 SE at any layer (longer pretraining does: benchmarks/ssl_probe.py, "
                "RESULTS.md)")
        lines.append(f"  {name}: {said}" + (f"; below random at {_say(below, count)}" if below else ""))
    return "\n".join(lines)


def cross_domain(out, run, dataset, root, seed):
    """The photographs' net on the fine-tuning set: linear probes and kNN against three random twins."""
    from transfer.probe import ProbeConfig, probe
    t = step("6. linear probes and kNN: the pretrained branch against random-init twins")
    tables = probe(ProbeConfig(dataset=dataset, data_root=root, model="cfn", weights=os.path.join(run, "last.pt"),
                               out=os.path.join(out, "probe"), random_seeds=3, twin_init="msra",
                               limit_train=2000, val_fraction=0.05, lbfgs_iters=40, seed=seed, progress=False))
    from transfer.probe_tables import format_table
    chance, rows = 1 / len(os.listdir(root)) if root else 0.1, []
    for name, what in (("linear", "linear probes (every label; weight decay chosen on validation)"),
                       ("knn", "weighted kNN (k 20, T 0.07; every label as the bank)")):
        print(f"{what}:\n{format_table(tables[name], chance=chance)}")
        rows += tables[name]
    above, below, count = _margins(rows)
    print(f"({time.time() - t:.0f} s; {os.path.join(out, 'probe', 'probe.png')})")
    return ("cross-domain (twelve photographs -> these labels; linear and kNN probes): the pretraining beat random "
            "by > 3 SE at "
            + (_say(above, count) if above else "no layer") + (f"; below it at {_say(below, count)}" if below else ""))


if __name__ == "__main__":
    main()
