"""`transfer`: fine-tune a backbone on a labelled dataset, run a seed recipe, list what exists, plot."""
import argparse
import json
import os
import sys

from tools.cli_runner import positive, run_cli

from .datasets import DatasetError

EPILOG = """examples:
  transfer list
  transfer finetune --dataset fashion-mnist --model fmnist-cnn --phase finetune --out runs/fm
  transfer finetune --dataset cifar100 --data-root ~/data --model cfn --weights runs/cfn/last.pt --out runs/c100
  transfer run cifar100-cfn --data-root ~/data --weights runs/cfn/last.pt --out runs/c100
  transfer plot filters --weights runs/cfn/last.pt --compare runs/c100/model.pt -o conv1.png
  transfer probe --dataset fashion-mnist --model cfn --weights runs/cfn/last.pt --out runs/probe
"""


def _augment(text):
    out = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = part.partition("=")
        if key not in ("rotation", "hflip", "shift", "shear", "zoom"):
            raise argparse.ArgumentTypeError(f"unknown augmentation '{key}' (rotation, hflip, shift, shear, zoom)")
        try:
            out[key] = True if key == "hflip" else float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{part}': expected {key}=NUMBER") from None
    return out


def _common(p):
    p.add_argument("--data-root", help="dataset folder (Fashion-MNIST defaults to Debian's package)")
    p.add_argument("--weights", help="backbone weights: jigsaw checkpoint / CFN .caffemodel (cfn), a local "
                   ".pth or a torchvision weight name, or 'none' for random initialisation")
    p.add_argument("--out", required=True, help="run folder: summary.json, history.csv, plots, checkpoints")
    p.add_argument("--epochs", type=int, help="cap on the epochs of each phase")
    p.add_argument("--batch-size", type=int, help="batch size")
    p.add_argument("--limit-train", type=int, help="use only the first N training images")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue from --out/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true")


def build_parser():
    ap = argparse.ArgumentParser(prog="transfer", description="Fine-tune a CFN branch, a torchvision "
                                 "backbone or the seeds' own nets; every seed experiment as a recipe.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="datasets, models and recipes")
    p = sub.add_parser("finetune", help="fine-tune one model on one dataset")
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--phase", choices=["head", "finetune", "both"], default="both")
    p.add_argument("--head", default="linear", help="'linear' or a spec like 1024,dropout:0.5,512")
    p.add_argument("--unfreeze", nargs="*", default=(), help="fine-tune only these backbone blocks")
    p.add_argument("--head-solver", help="solver.prototxt (or text) for the head phase")
    p.add_argument("--finetune-solver", help="solver.prototxt (or text) for the fine-tune phase")
    p.add_argument("--patience", type=int, nargs=2, metavar=("HEAD", "FINETUNE"), help="early stopping")
    p.add_argument("--input-size", type=int, help="resize images to this side (default: the model's)")
    p.add_argument("--input-norm", choices=["backbone", "dataset"], default="backbone",
                   help="backbone (default): a CFN branch gets its recipe's input (BGR, 0-255, the recipe's "
                        "normalisation), other models the training split's standardisation; dataset: that "
                        "standardisation for every model (seed 003)")
    p.add_argument("--augment", type=_augment, default={}, metavar="SPEC",
                   help="training augmentations, e.g. rotation=10,hflip,shift=0.2,shear=0.3,zoom=0.2")
    _common(p)
    p = sub.add_parser("probe", help="linear probes per layer: pretrained backbone vs random-init twins")
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--weights", nargs="+", help="the pretrained weights (as for finetune); several runs that "
                   "differ only in their seed give the pretrained column as mean ± SE")
    p.add_argument("--data-root", help="dataset folder (Fashion-MNIST defaults to Debian's package)")
    p.add_argument("--out", required=True, help="folder: probe.csv, fits.csv, probe.png, the feature cache")
    p.add_argument("--input-size", type=positive(int),
                   help="side the images are resized to (default: the backbone's, a CFN's tile size)")
    p.add_argument("--random-seeds", type=positive(int), default=3, help="random-init twins (default 3)")
    p.add_argument("--twin-init", choices=["caffe", "msra"], default="caffe",
                   help="a CFN twin's init: caffe (default; the fillers its pretraining started from) or msra (He)")
    p.add_argument("--target-dim", type=positive(int), default=9000, help="features per layer after pooling (9000)")
    p.add_argument("--weight-decays", type=positive(float, zero=True), nargs="+", default=None,
                   help="candidates, chosen on the validation split (default 1e-3 1e-2 0.1 1 10)")
    p.add_argument("--lbfgs-iters", type=positive(int), default=60, help="L-BFGS iterations per fit (60)")
    p.add_argument("--limit-train", type=positive(int), help="use only the first N training images")
    p.add_argument("--batch-size", type=positive(int), default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("run", help="run a seed recipe (see `transfer list`)")
    p.add_argument("recipe")
    _common(p)
    p = sub.add_parser("plot", help="plots from a run folder or weights")
    p.add_argument("kind", choices=["curves", "filters", "activations", "featuremaps"])
    p.add_argument("--run", help="run folder (curves, activations, featuremaps)")
    p.add_argument("--layer", help="module name inside the run's model, e.g. backbone.body.0 or head.0")
    p.add_argument("--indices", type=int, nargs="+", default=[0, 1, 2, 3], help="filters or classes")
    p.add_argument("--image", help="image file for featuremaps")
    p.add_argument("--weights", help="weights whose conv1 filters to draw (filters)")
    p.add_argument("--compare", help="a second set of weights to draw beside the first")
    p.add_argument("-o", "--output", help="PNG to write (filters)")
    return ap


def _config(args, base):
    from .finetune import FinetuneConfig
    fields = dict(base)
    fields.pop("reported", None)
    for key in ("data_root", "weights", "epochs", "batch_size", "limit_train", "seed", "workers", "device",
                "resume"):
        value = getattr(args, key, None)
        if value not in (None, False):
            fields[key] = value
    fields["out"], fields["progress"] = args.out, not args.no_progress
    if "unfreeze" in fields:
        fields["unfreeze"] = tuple(fields["unfreeze"])
    return FinetuneConfig(**fields)


def _run(args):
    if args.command == "list":
        from .backbones import BACKBONES
        from .datasets import DATASETS
        from .recipes import RECIPES
        print("datasets: " + ", ".join(sorted(DATASETS)))
        print("models:   " + ", ".join(sorted(BACKBONES)))
        print("recipes:")
        for name, r in RECIPES.items():
            print(f"  {name:24s} {r['dataset']:15s} {r['model']:18s} {r['reported']}")
        return 0
    if args.command == "plot":
        return _plot(args)
    if args.command == "probe":
        from .probe import ProbeConfig, probe
        weights = args.weights[0] if args.weights and len(args.weights) == 1 else args.weights
        rows = probe(ProbeConfig(dataset=args.dataset, model=args.model, weights=weights, out=args.out,
                                 input_size=args.input_size,
                                 data_root=args.data_root, random_seeds=args.random_seeds, twin_init=args.twin_init,
                                 target_dim=args.target_dim,
                                 weight_decays=tuple(args.weight_decays or ProbeConfig.weight_decays),
                                 lbfgs_iters=args.lbfgs_iters, limit_train=args.limit_train,
                                 batch_size=args.batch_size, seed=args.seed, device=args.device,
                                 progress=not args.no_progress))
        from .probe import format_table
        print(format_table(rows))
        print(f"wrote {os.path.join(args.out, 'probe.csv')} and probe.png")
        return 0
    from .finetune import finetune, stats_of
    if args.command == "run":
        from .recipes import RECIPES
        if args.recipe not in RECIPES:
            raise DatasetError(f"unknown recipe '{args.recipe}' (see `transfer list`)")
        recipe = dict(RECIPES[args.recipe])
        then = recipe.pop("then", None)
        if then is None:
            cfg = _config(args, recipe)
        else:  # two stages: the second starts from the first one's model
            out = args.out
            args.out = os.path.join(out, "stage1")
            first, _ = finetune(_config(args, recipe))
            print(json.dumps(dict(stage=1, **stats_of(first))))
            args.out, args.weights = os.path.join(out, "stage2"), os.path.join(out, "stage1", "model.pt")
            args.limit_train = then.get("limit_train", args.limit_train)
            cfg = _config(args, dict(recipe, **then))
    else:
        base = dict(dataset=args.dataset, model=args.model, phase=args.phase, head=args.head,
                    unfreeze=tuple(args.unfreeze), input_size=args.input_size, augment=args.augment,
                    input_norm=args.input_norm)
        for key in ("head_solver", "finetune_solver"):
            if getattr(args, key):
                base[key] = getattr(args, key)
        if args.patience:
            base["head_patience"], base["finetune_patience"] = args.patience
        cfg = _config(args, base)
    summary, _ = finetune(cfg)
    print(json.dumps(stats_of(summary)))
    return 0


def _plot(args):
    from .plots import plot_filters, plot_history, plot_lr
    if args.kind == "curves":
        if not args.run:
            raise DatasetError("plot curves needs --run RUN_FOLDER")
        print(plot_history(args.run), plot_lr(args.run))
        return 0
    if args.kind in ("activations", "featuremaps"):
        return _plot_model(args)
    if not args.weights or not args.output:
        raise DatasetError("plot filters needs --weights and -o OUTPUT.png")
    named = [(w, conv1_of(w)) for w in filter(None, (args.weights, args.compare))]
    print(plot_filters(args.output, *named))
    return 0


def _plot_model(args):
    import numpy as np
    import torch
    from PIL import Image
    from .finetune import load_run
    from .plots import plot_activation_maximisation, plot_feature_maps
    if not args.run or not args.layer:
        raise DatasetError(f"plot {args.kind} needs --run RUN_FOLDER and --layer NAME")
    model, conf = load_run(args.run)
    try:
        layer = model.get_submodule(args.layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:30]
        raise DatasetError(f"no layer '{args.layer}' in the model; some names: {', '.join(names)}") from None
    size, channels = conf["input_size"], model.backbone.in_channels
    out = args.output or os.path.join(args.run, f"{args.kind}-{args.layer}.png")
    if args.kind == "activations":
        print(plot_activation_maximisation(out, model, layer, args.indices, size, channels,
                                           title=f"{args.layer}: inputs that maximise / minimise"))
        return 0
    if not args.image:
        raise DatasetError("plot featuremaps needs --image IMAGE")
    try:
        with Image.open(args.image) as im:
            arr = np.asarray(im.convert("RGB" if channels == 3 else "L").resize((size, size)), np.float32) / 255
    except OSError as e:
        raise DatasetError(f"{args.image}: not a readable image ({e})") from None
    x = torch.from_numpy(arr).permute(2, 0, 1) if arr.ndim == 3 else torch.from_numpy(arr)[None]
    if conf.get("input", "").startswith("the backbone") and (conf.get("backbone") or {}).get("recipe"):
        from jigsaw.recipes import recipe_of
        from jigsaw.tiles import branch_input
        x = branch_input(x, recipe_of(conf["backbone"]))  # as the run fed it
    else:
        x = (x - torch.tensor(conf["mean"])[:, None, None]) / torch.tensor(conf["std"])[:, None, None]
    print(plot_feature_maps(out, model, layer, x, title=f"{args.layer} on {os.path.basename(args.image)}"))
    return 0


def conv1_of(weights):
    """First-layer filters from a jigsaw checkpoint, a CFN .caffemodel or a `transfer` model.pt."""
    from jigsaw.checkpoint import load_checkpoint
    if weights.endswith(".caffemodel"):
        from jigsaw.cfn import CFN
        return CFN.from_caffe(None, weights).conv1.weight.detach()
    state = load_checkpoint(weights).get("model", {})
    convs = [v for v in state.values() if hasattr(v, "dim") and v.dim() == 4]
    if not convs:
        raise DatasetError(f"{weights}: no convolution weights to plot")
    return convs[0]


def main(argv=None):
    return run_cli("transfer", _run, build_parser().parse_args(argv), (DatasetError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
