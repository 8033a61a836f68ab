"""`jigsaw`: permutations, prepare, train, evaluate, convert."""
import argparse
import os
import sys

from tools.run.cli_runner import add_version, positive, run_cli
from tools.run.errors import UserError
from tools.run.options import add_options, given

from .config import MIN_SIDE, TrainConfig, recorded_config

EPILOG = """examples:
  jigsaw permutations -n 1000 -o perms.npy
  jigsaw prepare ~/photos -o store.h5                 # the fork's dataset form (--layout jps)
  jigsaw prepare ilsvrc12_train_lmdb -o store.h5      # from Caffe's ImageNet LMDB
  jigsaw train --data store.h5 --permutations perms.npy --out runs/cfn           # recipe jps
  jigsaw permutations -n 701 -o perms701.npy
  jigsaw train --recipe jps++ --data store.h5 --permutations perms701.npy --out runs/cfn++
  jigsaw train --out runs/cfn --resume                # the run folder's recorded settings
  jigsaw prepare fmnist_png -o fm.h5 --layout square --size 160 --min-side 16   # small images, upscaled
  jigsaw train --recipe paper --cell 42 --tile 32 --data fm.h5 --permutations perms.npy --out runs/fm \\
      --init msra --solver prototxt/cfn_solver_short.prototxt
  jigsaw evaluate --weights runs/cfn/last.pt --data val.h5
  jigsaw convert runs/cfn/last.pt -o cfn            # cfn.prototxt + cfn.caffemodel
  torchrun --nproc_per_node 8 -m jigsaw.cli train --data store.h5 --permutations perms.npy --out runs/cfn
"""


def build_parser():
    ap = argparse.ArgumentParser(prog="jigsaw", description="Self-supervised jigsaw pretraining of the "
                                 "Context-Free Network (Noroozi & Favaro 2016), exact to Caffe.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("permutations", help="choose a permutation set by maximal Hamming distance")
    p.add_argument("-n", type=positive(int), default=1000, help="how many permutations (default 1000)")
    p.add_argument("-o", "--output", required=True, help=".npy (0-indexed), .bin (original, 1-indexed) or .h5")
    p.add_argument("--seed", type=int, default=0, help="seed for the first permutation (default 0)")
    p.add_argument("--criterion", choices=["mean", "min"], default="mean",
                   help="maximise the mean distance to the set (paper) or the minimum")

    p = sub.add_parser("prepare", help="decode an image folder or Caffe LMDB once into an HDF5 store "
                                       "(resumable)")
    p.add_argument("source", help="folder of images (searched recursively), or a Caffe LMDB of Datum "
                                  "records (raw or encoded)")
    p.add_argument("-o", "--output", required=True, help="store to write, e.g. store.h5")
    p.add_argument("--list", help="Caffe-style list file ('relative/path [label]' lines) instead of a search")
    p.add_argument("--layout", default="jps",
                   help="jps (default; recipes jps, jps++): the fork's generate_jps_dataset form, shorter "
                        "side 256 with OpenCV-bilinear geometry, centre 255 crop (+2 px it reads past); "
                        "square (recipes paper, bbrattoli): --size squares, PIL bilinear")
    p.add_argument("--size", type=positive(int), default=256,
                   help="side of the stored squares in the square layout (default 256)")
    p.add_argument("--workers", type=positive(int), help="decoding processes (default: all cores)")
    p.add_argument("--min-side", type=positive(int), default=MIN_SIDE,
                   help=f"skip images whose shorter side is below this, as junk (default {MIN_SIDE}; lower it for "
                        "small-image sets such as 28 px Fashion-MNIST, upscaled with --size)")

    p = sub.add_parser("train", help="pretrain a CFN with Caffe solver semantics")
    # unset options are None: defaults come from TrainConfig, or from the run's record with --resume
    add_options(p, TrainConfig, unset=True)
    p.add_argument("--fp32", action="store_const", const="fp32", dest="precision", help="same as --precision fp32")

    p = sub.add_parser("evaluate", help="pretext accuracy of trained weights")
    p.add_argument("--weights", required=True, help="checkpoint .pt from `jigsaw train` or a CFN .caffemodel")
    p.add_argument("--data", required=True, help="store (.h5) or image folder")
    p.add_argument("--permutations", help="permutation file (needed with a .caffemodel)")
    p.add_argument("--recipe", help="puzzles for a .caffemodel (default jps); a checkpoint's own is used")
    p.add_argument("--batch-size", type=positive(int), default=64)
    p.add_argument("--repeats", type=positive(int), default=1, help="puzzles per image (default 1)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("convert", help="CFN checkpoint <-> Caffe .prototxt + .caffemodel")
    p.add_argument("source", help="checkpoint .pt (to Caffe) or .caffemodel (to a checkpoint)")
    p.add_argument("-o", "--output", required=True, help="stem for NAME.prototxt + NAME.caffemodel, or a .pt")
    p.add_argument("--prototxt", help="the .caffemodel's net (optional, checked against the weights)")
    p.add_argument("--permutations", help="permutation file to store with a converted .caffemodel")
    p.add_argument("--recipe", default=None,
                   help="the recipe a .caffemodel was trained with, recorded in the checkpoint (default "
                        "jps, the original release's)")
    return add_version(ap)


def _run(args):
    if args.command == "permutations":
        from .permutations import hamming_stats, make_permutations, save_permutations
        perms = make_permutations(args.n, args.seed, args.criterion)
        save_permutations(args.output, perms)
        mean, low = hamming_stats(perms)
        print(f"wrote {args.output}: {len(perms)} permutations, Hamming distance mean {mean:.3f}, min {low}")
    elif args.command == "prepare":
        from .store import prepare
        count, skipped = prepare(args.source, args.output, args.size, args.workers, args.list,
                                 layout=args.layout, min_side=args.min_side)
        for path, reason in skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        print(f"wrote {args.output}: {count} images ({len(skipped)} skipped)")
    elif args.command == "train":
        from .train import train
        settings = {**(recorded_config(args.out) if args.resume else {}), **given(TrainConfig, args)}
        for need in ("data", "permutations"):
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
        m = evaluate(args.weights, args.data, args.permutations, args.batch_size, args.repeats, args.seed,
                     recipe_name=args.recipe)
        print(f"pretext accuracy on {m['n']} puzzles (recipe {m['recipe']}): top-1 {m['top1']:.4f}, "
              f"top-5 {m['top5']:.4f}, loss {m['loss']:.4f} (chance {m['chance']:.4f})")
    elif args.command == "convert":
        _convert(args)
    return 0


def _convert(args):
    from tools.run.checkpoint import save_checkpoint
    from tools.caffe.writer import pair_stem

    from .caffe_form import to_caffe
    from .checkpoint import cfn_payload, read_cfn
    from .recipes import recipe_record
    if args.source.endswith(".caffemodel"):
        model, perms, pcfg, _ = read_cfn(args.source, args.permutations, args.recipe, prototxt=args.prototxt)
        _, record = recipe_record(pcfg.recipe)
        save_checkpoint(args.output, cfn_payload(model, perms, record))
        print(f"wrote {args.output} (recipe {record['recipe']})")
        return
    model, perms, pcfg, _ = read_cfn(args.source, None, args.recipe)
    stem = pair_stem(args.output)
    written = to_caffe(model, stem + ".prototxt", stem + ".caffemodel", recipe=pcfg,
                             permutations=perms if len(perms) else None)
    print("wrote " + ", ".join(written))


def main(argv=None):
    code = run_cli("jigsaw", _run, build_parser().parse_args(argv))
    store = sys.modules.get("jigsaw.store")
    if store is not None and store.WRITE_FAILED and argv is None:  # the command line, not a caller's process
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # HDF5's exit handler would crash on the file whose write failed
    return code


if __name__ == "__main__":
    sys.exit(main())
