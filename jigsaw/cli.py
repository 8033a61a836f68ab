"""`jigsaw`: permutations, prepare, train, evaluate, convert."""
import argparse
import os
import sys

from tools.run.cli_runner import Parser, add_version, run_cli
from tools.run.errors import UserError
from tools.run.options import add_options, given

from .config import (ConvertConfig, EvaluateConfig, PermutationsConfig, PrepareConfig, TrainConfig,
                     read_train_settings, recipe_settings, recorded_config)

EPILOG = """examples:
  jigsaw permutations -n 1000 -o perms.npy
  jigsaw prepare ~/photos -o store.h5                 # the fork's dataset form (--layout jps)
  jigsaw prepare ilsvrc12_train_lmdb -o store.h5      # from Caffe's ImageNet LMDB
  jigsaw train --data store.h5 --permutations perms.npy --out runs/cfn           # recipe jps
  jigsaw permutations -n 701 -o perms701.npy
  jigsaw train --recipe jps++ --data store.h5 --permutations perms701.npy --out runs/cfn++
  jigsaw train --out runs/cfn --resume                # the run folder's recorded settings
  jigsaw show jps++ > jps++.json                      # then: jigsaw train --config jps++.json --data ... --out ...
  jigsaw prepare fmnist_png -o fm.h5 --layout square --size 160 --min-side 16   # small images, upscaled
  jigsaw train --recipe paper --cell 42 --tile 32 --data fm.h5 --permutations perms.npy --out runs/fm \\
      --init msra --solver cfn_solver_short
  jigsaw evaluate --weights runs/cfn/last.pt --data val.h5
  jigsaw convert runs/cfn/last.pt -o cfn            # cfn.prototxt + cfn.caffemodel
  torchrun --nproc_per_node 8 -m jigsaw.cli train --data store.h5 --permutations perms.npy --out runs/cfn
"""


def build_parser():
    ap = Parser(prog="jigsaw", description="Self-supervised jigsaw pretraining of the "
                                 "Context-Free Network (Noroozi & Favaro 2016), exact to Caffe.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("permutations", help="choose a permutation set by maximal Hamming distance")
    add_options(p, PermutationsConfig)
    p = sub.add_parser("prepare", help="decode an image folder or Caffe LMDB once into an HDF5 store "
                                       "(resumable)")
    add_options(p, PrepareConfig)

    p = sub.add_parser("show", help="a recipe's full train settings as JSON (a --config file) and its puzzles")
    p.add_argument("recipe")
    p = sub.add_parser("train", help="pretrain a CFN with Caffe solver semantics")
    p.add_argument("--config", help="settings from a JSON or YAML file (`jigsaw show`'s output, or a run's "
                                    "config.json); options given override them")
    # unset options are None: defaults come from TrainConfig, or from the run's record with --resume
    add_options(p, TrainConfig, unset=True, not_required=("out",))
    p.add_argument("--fp32", action="store_const", const="fp32", dest="precision", help="same as --precision fp32")

    p = sub.add_parser("evaluate", help="pretext accuracy of trained weights")
    add_options(p, EvaluateConfig)
    p = sub.add_parser("convert", help="CFN checkpoint <-> Caffe .prototxt + .caffemodel")
    add_options(p, ConvertConfig)
    return add_version(ap)


def _run(args, held=None):
    """Run one command; `held` (a dict) receives what main() must see after it: prepare's StoreWrites."""
    if args.command == "permutations":
        from .permutations import hamming_stats, make_permutations, save_permutations
        cfg = PermutationsConfig(**given(PermutationsConfig, args))
        perms = make_permutations(cfg.n, cfg.seed, cfg.criterion)
        save_permutations(cfg.output, perms)
        mean, low = hamming_stats(perms)
        print(f"wrote {cfg.output}: {len(perms)} permutations, Hamming distance mean {mean:.3f}, min {low}")
    elif args.command == "prepare":
        from .store import StoreWrites, prepare
        cfg = PrepareConfig(**given(PrepareConfig, args))
        writes = (held if held is not None else {}).setdefault("writes", StoreWrites())
        count, skipped = prepare(cfg.source, cfg.output, cfg.size, cfg.workers, cfg.list, progress=cfg.progress,
                                 layout=cfg.layout, min_side=cfg.min_side, writes=writes)
        for path, reason in skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        print(f"wrote {cfg.output}: {count} images ({len(skipped)} skipped)")
    elif args.command == "show":
        import json
        print(json.dumps(recipe_settings(args.recipe), indent=2))
    elif args.command == "train":
        from .train import train
        settings = read_train_settings(args.config) if args.config else {}
        if args.out is None:
            args.out = settings.get("out")
        if args.out is None:
            raise UserError("train: --out is required")
        settings.update({**(recorded_config(args.out) if args.resume else {}), **given(TrainConfig, args)})
        needs = ("data",) if settings.get("method") == "pirl" else ("data", "permutations")
        for need in needs:
            if need not in settings:
                raise UserError(f"train: --{need} is required (or --resume a run folder whose config.json "
                                "records it)")
        cfg = TrainConfig(**settings)
        monitor = None
        if cfg.monitor:  # the command line composes transfer's monitor in; the jigsaw library knows no transfer
            from transfer.monitor import from_config
            monitor = from_config(cfg)
        train(cfg, monitor)
    elif args.command == "evaluate":
        from .evaluate import evaluate
        cfg = EvaluateConfig(**given(EvaluateConfig, args))
        m = evaluate(cfg.weights, cfg.data, cfg.permutations, cfg.batch_size, cfg.repeats, cfg.seed, cfg.device,
                     recipe_name=cfg.recipe)
        print(f"pretext accuracy on {m['n']} puzzles (recipe {m['recipe']}): top-1 {m['top1']:.4f}, "
              f"top-5 {m['top5']:.4f}, loss {m['loss']:.4f} (chance {m['chance']:.4f})")
    elif args.command == "convert":
        _convert(ConvertConfig(**given(ConvertConfig, args)))
    return 0


def _convert(cfg):
    from tools.run.checkpoint import save_checkpoint
    from tools.caffe.writer import pair_stem

    from .caffe_form import to_caffe
    from .checkpoint import cfn_payload, read_cfn
    if cfg.source.endswith(".caffemodel"):
        model, perms, _, found = read_cfn(cfg.source, cfg.permutations, cfg.recipe, prototxt=cfg.prototxt)
        record = dict(recipe=found["recipe"], recipe_options=found["recipe_options"])
        save_checkpoint(cfg.output, cfn_payload(model, perms, record))
        print(f"wrote {cfg.output} (recipe {found['recipe']}: {found['recipe_source']})")
        return
    from .checkpoint import export_trunk
    said = export_trunk(cfg.source, cfg.output)  # a torchvision trunk's run: its torchvision state_dict
    if said:
        print(said)
        return
    model, perms, pcfg, _ = read_cfn(cfg.source, None, cfg.recipe)
    stem = pair_stem(cfg.output)
    written = to_caffe(model, stem + ".prototxt", stem + ".caffemodel", recipe=pcfg,
                             permutations=perms if len(perms) else None)
    print("wrote " + ", ".join(written))


def main(argv=None):
    held = {}  # prepare's StoreWrites: a failed write leaves HDF5 objects that must never be closed
    code = run_cli("jigsaw", lambda args: _run(args, held), build_parser().parse_args(argv))
    if "writes" in held and held["writes"].failed and argv is None:  # the command line, not a caller's process
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # HDF5's exit handler would crash on the file whose write failed
    return code


if __name__ == "__main__":
    sys.exit(main())
