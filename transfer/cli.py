"""`transfer`: fine-tune a backbone on a labelled dataset, run a seed recipe, list what exists, plot."""
import argparse
import json
import os
import sys

from tools.run.cli_runner import Parser, add_version, run_cli
from tools.run.errors import UserError
from tools.run.options import add_options, check_types, given
from tools.run.folder import RunFolder

from .config import RUN_FIELDS, RUN_OPTIONS, FinetuneConfig, ProbeConfig

EPILOG = """examples:
  transfer list
  transfer show fruits360-cfn > fruits.json        # then: transfer finetune --config fruits.json --out runs/f
  transfer finetune --dataset fashion-mnist --model fmnist-cnn --phase finetune --out runs/fm
  transfer finetune --dataset cifar100 --data-root ~/data --model cfn --weights runs/cfn/last.pt --out runs/c100
  transfer run cifar100-cfn --data-root ~/data --weights runs/cfn/last.pt --out runs/c100
  transfer finetune --dataset fashion-mnist --model cfn --weights runs/cfn/last.pt --labels-per-class 10 \
      --twin-seed 1000 --out runs/fm10-twin0     # a random twin of that branch, fine-tuned alike
  transfer compare runs/fm10-* runs/fm10-twin*  # pretrained vs twins, mean ± SE
  transfer plot filters --weights runs/cfn/last.pt --compare runs/c100/model.pt -o conv1.png
  transfer probe --dataset fashion-mnist --model cfn --weights runs/cfn/last.pt --out runs/probe
  transfer probe --dataset fashion-mnist --model cfn --weights runs/cfn/last.pt --out runs/probe \
      --labels-per-class 1 5 10 50 100 all --twin-seeds 2000 2001 2002
"""


def build_parser():
    ap = Parser(prog="transfer", description="Fine-tune a CFN branch, a torchvision "
                                 "backbone or the small nets of the reproduced experiments; each experiment as a "
                                 "recipe (`transfer list`).",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="datasets (where each is read from, whether it is here), models and recipes")
    p = sub.add_parser("show", help="a recipe's full settings as JSON (a --config file)")
    p.add_argument("recipe")
    p = sub.add_parser("finetune", help="fine-tune one model on one dataset")
    p.add_argument("--config", help="settings from a JSON or YAML file (`transfer show`'s output, or a run's "
                                    "config.json); options given override them")
    add_options(p, FinetuneConfig, unset=True, not_required=("dataset", "model", "out"))
    p.add_argument("--patience", type=int, nargs=2, metavar=("HEAD", "FINETUNE"),
                   help="early stopping patience of each phase, in epochs (default 5 1)")
    p = sub.add_parser("probe", help="probes per layer (linear, kNN, low-shot, VOC07 SVMs): pretrained backbone vs "
                                     "random-init twins")
    add_options(p, ProbeConfig, unset=True)
    p = sub.add_parser("compare", help="finished fine-tune runs: pretrained vs random-init twins (--twin-seed "
                                       "runs), per label budget, mean ± SE")
    p.add_argument("runs", nargs="+", help="run folders (each with config.json and summary.json)")
    p = sub.add_parser("run", help="run a seed recipe (see `transfer list`)")
    p.add_argument("recipe")
    add_options(p, FinetuneConfig, only=RUN_OPTIONS, unset=True)
    p = sub.add_parser("plot", help="plots from a run folder or weights")
    p.add_argument("kind", choices=["curves", "filters", "activations", "featuremaps"])
    p.add_argument("--run", help="run folder (curves, activations, featuremaps)")
    p.add_argument("--layer", help="module name inside the run's model, e.g. backbone.body.0 or head.0")
    p.add_argument("--indices", type=int, nargs="+", default=[0, 1, 2, 3], help="filters or classes")
    p.add_argument("--image", help="image file for featuremaps")
    p.add_argument("--weights", help="weights whose conv1 filters to draw (filters)")
    p.add_argument("--compare", help="a second set of weights to draw beside the first")
    p.add_argument("-o", "--output", help="PNG to write (filters)")
    return add_version(ap)


def _config(args, base):
    """The recipe's (or the command line's) settings, then with --resume those the run folder recorded,
    with the options given on top."""
    fields = dict(base)
    fields.pop("reported", None)
    if getattr(args, "config", None):
        from .catalog import read_settings
        fields.update(read_settings(args.config))
    if args.out is None:
        args.out = fields.get("out")
    if args.out is None:
        raise UserError(f"{args.command}: --out is required")
    if args.resume:
        recorded = check_types(FinetuneConfig, RunFolder(args.out, "transfer run").recorded(
            RUN_FIELDS, machine=("device", "workers")), os.path.join(args.out, "config.json"))
        if not recorded and args.resume != "auto":
            raise UserError(f"{os.path.join(args.out, 'config.json')}: no run to resume here")
        fields.update(recorded)
    settings = {**fields, **given(FinetuneConfig, args)}
    for need in ("dataset", "model"):
        if need not in settings:
            raise UserError(f"{args.command}: --{need} is required (or --resume a run folder whose config.json "
                            "records it)")
    return FinetuneConfig(**settings)


def _run(args):
    if args.command == "list":
        from .catalog import list_text
        print(list_text())
        return 0
    if args.command == "show":
        from .catalog import recipe_settings
        print(json.dumps(recipe_settings(args.recipe), indent=2))
        return 0
    if args.command == "plot":
        return _plot(args)
    if args.command == "compare":
        from .compare import compare, format_compare
        print(format_compare(compare(args.runs)))
        return 0
    if args.command == "probe":
        from .probe import probe
        settings = given(ProbeConfig, args)
        if len(settings.get("weights") or ()) == 1:
            settings["weights"] = settings["weights"][0]
        tables = probe(ProbeConfig(**settings))
        from .probe_tables import format_lowshot, format_table
        said = dict(linear=("linear probes, every training label (probe.csv, probe.png)", format_table),
                    knn=("weighted kNN, the training split as the bank (knn.csv)", format_table),
                    lowshot=("low-shot: pretrained minus random, in points and SE (label_efficiency.csv, .png)",
                             format_lowshot),
                    svm=("VOC07: linear SVMs per class on trainval, 11-point mAP on test (voc07.csv)", format_table))
        for name, rows in tables.items():
            print(f"{said[name][0]}\n{said[name][1](rows)}\n")
        print(f"wrote {args.out}")
        return 0
    import shlex

    from tools.run.signals import Stopped
    given_out = args.out  # a two-stage recipe moves args.out to its stage; a --config file may give it instead
    try:
        return _fit(args)
    except Stopped as e:
        resume = " ".join(["transfer", args.command] + ([shlex.quote(args.recipe)] if args.command == "run" else [])
                          + ["--out", shlex.quote(given_out or args.out), "--resume"])
        print(f"transfer {args.command}: {e}; resume with: {resume}", file=sys.stderr)
        return 128 + e.signum


def _fit(args):
    from .finetune import finetune, stats_of
    if args.command == "run":
        from .catalog import recipe_named
        recipe = recipe_named(args.recipe)
        then = recipe.pop("then", None)
        if then is None:
            cfg = _config(args, recipe)
        else:  # two stages: the second starts from the first one's model
            out = args.out
            args.out = os.path.join(out, "stage1")
            first, _ = finetune(_config(args, recipe))
            print(json.dumps(dict(stage=1, **stats_of(first))))
            args.out, args.weights = os.path.join(out, "stage2"), os.path.join(out, "stage1", "model.pt")
            args.resume = args.resume and "auto"  # stage 2 may not have started
            args.limit_train = then.get("limit_train", args.limit_train)
            cfg = _config(args, dict(recipe, **then))
    else:
        cfg = _config(args, dict(zip(("head_patience", "finetune_patience"), args.patience or ())))
    summary, _ = finetune(cfg)
    print(json.dumps(stats_of(summary)))
    return 0


def _plot(args):
    from .plots import plot_filters, plot_history, plot_lr
    if args.kind == "curves":
        if not args.run:
            raise UserError("plot curves needs --run RUN_FOLDER")
        print(plot_history(args.run))
        print(plot_lr(args.run) or "the learning rate was constant in every phase: no lr.png")
        return 0
    if args.kind in ("activations", "featuremaps"):
        return _plot_model(args)
    if not args.weights or not args.output:
        raise UserError("plot filters needs --weights and -o OUTPUT.png")
    from .backbones import first_conv_of
    got = [(w, *first_conv_of(w)) for w in filter(None, (args.weights, args.compare))]
    if len({bgr for _, _, bgr in got}) > 1:
        raise UserError(f"{args.compare}: its filters take another channel order than {args.weights}'s")
    parts = [os.path.abspath(w).split(os.sep) for w, _, _ in got]
    k = 1  # titles: the shortest path tails that tell the files apart (last.pt, then seed0/last.pt, ...)
    while k < max(map(len, parts)) and len({tuple(p[-k:]) for p in parts}) < len(parts):
        k += 1
    names = [os.path.join(*p[-k:]) for p in parts]
    print(plot_filters(args.output, *[(n, t) for n, (_, t, _) in zip(names, got)], bgr=got[0][2]))
    return 0


def _plot_model(args):
    import torch
    from .finetune import load_run
    from .plots import layer_units, plot_activation_maximisation, plot_feature_maps
    if not args.run or not args.layer:
        raise UserError(f"plot {args.kind} needs --run RUN_FOLDER and --layer NAME")
    model, conf = load_run(args.run)
    try:
        layer = model.get_submodule(args.layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:30]
        raise UserError(f"no layer '{args.layer}' in the model; some names: {', '.join(names)}") from None
    size, channels = conf["input_size"], model.backbone.in_channels
    out = args.output or os.path.join(args.run, f"{args.kind}-{args.layer}.png")
    if args.kind == "activations":
        units = layer_units(model, layer, size, channels)
        bad = [i for i in args.indices if not 0 <= i < units]
        if bad:
            raise UserError(f"--indices {' '.join(map(str, bad))}: layer '{args.layer}' has {units} "
                            f"{'units' if units else 'outputs'}, numbered 0..{units - 1}")
        is_output = layer is list(model.modules())[-1]  # the last layer's units are the classes
        print(plot_activation_maximisation(out, model, layer, args.indices, size, channels,
                                           title=f"{args.layer}: inputs that maximise / minimise",
                                           names=conf["classes"] if is_output else None))
        return 0
    if not args.image:
        raise UserError("plot featuremaps needs --image IMAGE")
    from .data import _load, _prepare
    x = _prepare(_load(args.image, channels, size), size, channels)  # read and resized as the run's images were
    if conf.get("input", "").startswith("the backbone") and (conf.get("backbone") or {}).get("recipe"):
        from jigsaw.recipes import recipe_of
        from jigsaw.tiles import branch_input
        x = branch_input(x, recipe_of(conf["backbone"]))  # as the run fed it
    else:
        x = (x - torch.tensor(conf["mean"])[:, None, None]) / torch.tensor(conf["std"])[:, None, None]
    print(plot_feature_maps(out, model, layer, x, title=f"{args.layer} on {os.path.basename(args.image)}"))
    return 0


def main(argv=None):
    return run_cli("transfer", _run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
