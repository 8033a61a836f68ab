"""`jigsaw`: permutations, prepare, train, evaluate, convert."""
import argparse
import os
import sys

from tools.cli_runner import positive, run_cli

EPILOG = """examples:
  jigsaw permutations -n 1000 -o perms.npy
  jigsaw prepare ~/photos -o store.h5                 # the fork's dataset form (--layout jps)
  jigsaw prepare ilsvrc12_train_lmdb -o store.h5      # from Caffe's ImageNet LMDB
  jigsaw train --data store.h5 --permutations perms.npy --out runs/cfn           # recipe jps
  jigsaw permutations -n 701 -o perms701.npy
  jigsaw train --recipe jps++ --data store.h5 --permutations perms701.npy --out runs/cfn++
  jigsaw train --out runs/cfn --resume                # the run folder's recorded settings
  jigsaw prepare fmnist_png -o fm.h5 --layout square --size 128 --min-side 16   # small images, upscaled
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
    p.add_argument("--min-side", type=positive(int), default=64,
                   help="skip images whose shorter side is below this, as junk (default 64; lower it for "
                        "small-image sets such as 28 px Fashion-MNIST, upscaled with --size)")

    p = sub.add_parser("train", help="pretrain a CFN with Caffe solver semantics")
    p.add_argument("--data", help="prepared store (.h5) or image folder (with --resume: the recorded one)")
    p.add_argument("--permutations", help="permutation file (.npy, .bin, .h5) (with --resume: the recorded one)")
    p.add_argument("--out", required=True, help="run folder: config, logs, checkpoints, plots")
    p.add_argument("--solver", help="solver.prototxt (default: prototxt/cfn_solver.prototxt)")
    p.add_argument("--val-data", help="separate validation store; default: hold out --val-fraction")
    p.add_argument("--val-fraction", type=float, default=0.05, help="images held out (default 0.05)")
    p.add_argument("--batch-size", type=positive(int), default=256, help="puzzles per iteration (256)")
    p.add_argument("--width", type=positive(float), default=1.0, help="channel width multiplier (1.0)")
    p.add_argument("--dropout", type=float, default=0.5, help="dropout after fc6/fc7 (0.5)")
    p.add_argument("--recipe", default="jps",
                   help="puzzles: jps (default; the authors' released data layer), jps++ (MergeData, "
                        "MVN x50), paper (per-tile mean, random crop), bbrattoli (per-tile mean/std); "
                        "README: Recipes")
    p.add_argument("--donor", choices=["same", "other"], default="same",
                   help="jps++: tiles substituted from a second puzzle of the same image (the fork's "
                        "code, default) or of another image in the batch (the 2018 paper's text)")
    p.add_argument("--cell", type=positive(int),
                   help="another grid, e.g. for small images: cells of CELL px (crop 3 x CELL), tiles of "
                        "--tile px at offsets 0..CELL-TILE; the CFN takes TILE px tiles (jps: 85 and 64)")
    p.add_argument("--tile", type=positive(int), help="tile side in px with --cell (README: Small images)")
    p.add_argument("--init", choices=["caffe", "msra"], default="caffe",
                   help="Caffe's fillers (default) or He init with zero biases, conv1 scaled to the tiles, for a "
                        "faster start with Adam (--solver prototxt/cfn_solver_short.prototxt)")
    p.add_argument("--seed", type=int, default=0, help="seed for everything random (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="auto: bf16 autocast + channels_last on CUDA, fp32 elsewhere (default)")
    p.add_argument("--fp32", action="store_const", const="fp32", dest="precision", help="same as --precision fp32")
    p.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   help="torch.compile the model; MODE: default, reduce-overhead (CUDA graphs), max-autotune")
    p.add_argument("--log-every", type=positive(int), default=20,
                   help="iterations per log flush; the GPU is waited for only then (default 20)")
    p.add_argument("--gray-prob", type=float, default=0.0,
                   help="paper / bbrattoli: probability of a grayscale image (jps draws its own)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes for an image folder")
    p.add_argument("--decode", choices=["cpu", "device"], default="cpu",
                   help="image folder: PIL in --workers processes (cpu), or torchvision.io on the "
                        "training device, nvJPEG on CUDA (device)")
    for name in ("max-iter", "test-interval", "test-iter", "snapshot", "display"):
        p.add_argument(f"--{name}", type=int, help=f"override the solver's {name.replace('-', '_')}")
    p.add_argument("--base-lr", type=float, help="override the solver's base_lr")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from last.pt with the settings its config.json recorded; "
                        "options given override those that may change (iterations, device, base lr, ...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # unset options are None: defaults come from TrainConfig, or from the run's record with --resume
    p.set_defaults(**{a.dest: None for a in p._actions if a.dest not in ("help", "out", "resume", "no_progress")})

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
    return ap


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
        from .train import RUN_FIELDS, TrainConfig, recorded_config, train
        given = {f: getattr(args, f) for f in RUN_FIELDS if getattr(args, f, None) is not None}
        settings = {**(recorded_config(args.out) if args.resume else {}), **given}
        for need in ("data", "permutations"):
            if need not in settings:
                from tools.errors import CaffeError
                raise CaffeError(f"train: --{need} is required (or --resume a run folder whose config.json "
                                 "records it)")
        train(TrainConfig(**settings, resume=args.resume, progress=not args.no_progress))
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
    from .evaluate import load_cfn
    if args.source.endswith(".caffemodel"):
        import torch
        from .cfn import CFN
        from .checkpoint import save_checkpoint
        from .permutations import load_permutations
        from .recipes import recipe_record
        model = CFN.from_caffe(args.prototxt, args.source)
        perms = load_permutations(args.permutations) if args.permutations else None
        if perms is not None and len(perms) != model.num_permutations:
            from tools.errors import CaffeError
            raise CaffeError(f"{args.permutations}: {len(perms)} permutations, but {args.source} "
                             f"predicts {model.num_permutations}")
        _, record = recipe_record(args.recipe or "jps")
        save_checkpoint(args.output, dict(model=model.state_dict(), widths=model.widths, iter=0,
                                          permutations=torch.from_numpy(perms) if perms is not None
                                          else torch.zeros(0, 9, dtype=torch.long), **record))
        print(f"wrote {args.output} (recipe {record['recipe']})")
        return
    model, perms, pcfg = load_cfn(args.source, None, args.recipe)
    stem = os.path.splitext(args.output)[0] if args.output.endswith((".prototxt", ".caffemodel")) \
        else args.output
    written = model.to_caffe(stem + ".prototxt", stem + ".caffemodel", recipe=pcfg,
                             permutations=perms if len(perms) else None)
    print("wrote " + ", ".join(written))


def main(argv=None):
    return run_cli("jigsaw", _run, build_parser().parse_args(argv), (ValueError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
