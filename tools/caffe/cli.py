"""caffe-convert: Caffe .prototxt/.caffemodel to a PyTorch .pt (and back), a summary table, a standalone
export (.pt2, .onnx), a layer-by-layer check against OpenCV (--verify), and `classify`."""
import argparse
import contextlib
import os
import sys
import warnings
from typing import Optional, Sequence

from ..run.checkpoint import save_checkpoint
from ..run.cli_runner import Parser, add_version, positive, run_cli
from ..run.errors import CaffeError

EPILOG = """examples:
  caffe-convert deploy.prototxt weights.caffemodel -o model.pt
  caffe-convert deploy.prototxt weights.caffemodel --summary
  caffe-convert train_val.prototxt --phase TRAIN --input-shape data=256,27,64,64 --summary
  caffe-convert model.pt -o converted        # writes converted.prototxt + converted.caffemodel
  caffe-convert deploy.prototxt weights.caffemodel --export model.onnx   # or model.pt2
  caffe-convert deploy.prototxt weights.caffemodel --verify     # per-layer max |diff| against OpenCV
  caffe-convert classify deploy.prototxt weights.caffemodel cat.jpg --mean mean.binaryproto --labels synset_words.txt
"""


def _shape_arg(text):
    try:
        name, dims = text.split("=", 1)
        return name, tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=N,C,H,W, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="caffe-convert", description="Convert Caffe nets and weights to PyTorch and back, "
        "without Caffe installed.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("net", help="a .prototxt net (with optional .caffemodel), or a .pt written by "
                    "caffe-convert for the reverse direction")
    ap.add_argument("weights", nargs="?", help=".caffemodel (binary or HDF5) with the net's weights")
    ap.add_argument("-o", "--output", help=".pt to write; for a .pt input, the stem of the "
                    ".prototxt + .caffemodel pair to write")
    ap.add_argument("--summary", action="store_true", help="print layer, output shape and parameter "
                    "table")
    ap.add_argument("--phase", default="TEST", choices=["TRAIN", "TEST"], help="which layers to "
                    "keep (include/exclude rules); default TEST")
    ap.add_argument("--input-shape", action="append", type=_shape_arg, default=[], metavar="NAME=N,C,H,W",
                    help="shape for an input blob whose shape the net leaves open (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="seed for filler initialisation of layers "
                    "without weights (default 0)")
    ap.add_argument("--strict", action="store_true", help="a field the schema does not know is an error "
                    "(default: a warning naming file:line and the field)")
    ap.add_argument("--export", metavar="FILE", help="also write the net as FILE.pt2 (torch.export; "
                    "torch.export.load(FILE).module()) or FILE.onnx, to run without this package")
    ap.add_argument("--verify", action="store_true", help="also run the net in OpenCV's Caffe reader on a "
                    "seeded input and print max |difference| per layer; exit 2 at the first layer over "
                    "tolerance or anything either side skips")
    ap.add_argument("--tolerance", type=positive(float), default=1e-4, help="--verify: allowed difference relative to "
                    "the layer's largest |value| (default 1e-4)")
    return add_version(ap)


def _to_torch(args):
    from .. import load_caffe_net
    from .prototxt import net_text

    # a summary needs shapes, not weights: without anything to write or copy, nothing is allocated
    shapes_only = args.summary and not (args.weights or args.output or args.export)
    net = load_caffe_net(args.net, args.weights, phase=args.phase, seed=args.seed,
                         input_shapes=dict(args.input_shape) or None, device="meta" if shapes_only else "cpu")
    net.without_side_effects()  # converting, exporting or checking a net never writes through its output layers
    if args.weights:
        for line in str(net.report).splitlines():
            print(f"caffe-convert: {line}", file=sys.stderr)
    if args.summary:
        print(_summary(net, args.net))
    if args.output:
        from .export import PT_FORMAT
        payload = {"format": PT_FORMAT, "net": net_text(net.net_param),
                   "input_shapes": {k: list(v) for k, v in net.input_shapes.items()},
                   "state_dict": net.state_dict()}
        save_checkpoint(args.output, payload)
        print(f"wrote {args.output}")
    if args.export:
        from .export import export
        print(f"wrote {export(net, args.export)}")


def _summary(net, name):
    from .summary import summary
    return summary(net, title=f"{name}: {len(net.plan)} layers")


def _from_torch(args):
    from .export import load_pt
    from .writer import pair_stem, save_caffe_net

    net = load_pt(args.net)
    if args.summary:
        print(_summary(net, args.net))
    if args.output:
        stem = pair_stem(args.output)
        save_caffe_net(net, stem + ".prototxt", stem + ".caffemodel")
        print(f"wrote {stem}.prototxt and {stem}.caffemodel")


def _verify(args):
    from .verify import format_rows, verify
    rows, problem = verify(args.net, args.weights, args.seed, args.tolerance, dict(args.input_shape) or None)
    print(format_rows(rows))
    if problem:
        raise CaffeError(problem)
    print(f"caffe-convert: {len(rows)} layers agree with OpenCV within {args.tolerance:g} (relative)")


def _run(args):
    if not (args.summary or args.output or args.verify or args.export):
        raise CaffeError("nothing to do: give -o OUTPUT, --export FILE, --summary and/or --verify")
    if not os.path.exists(args.net):
        raise CaffeError(f"{args.net}: no such file")
    if args.net.endswith(".pt"):
        if args.weights:
            raise CaffeError("a .pt input already holds its weights; drop the second argument")
        if args.verify or args.export:
            raise CaffeError("--verify and --export read a .prototxt (+ .caffemodel); convert the .pt first")
        _from_torch(args)
    else:
        with _strict(args.strict):
            if args.summary or args.output or args.export:
                _to_torch(args)
            if args.verify:
                _verify(args)


@contextlib.contextmanager
def _strict(strict):
    """--strict: a field our schema does not know (a forked caffe.proto's) is an error, not a warning."""
    if not strict:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*unknown field")
        try:
            yield
        except UserWarning as w:
            raise CaffeError(f"--strict: {w}") from None


def build_classify_parser() -> argparse.ArgumentParser:
    ap = Parser(
        prog="caffe-convert classify", description="Top predictions for images, preprocessed as Caffe's "
        "example classifier (classification.cpp) does: BGR, resized to the input, minus the mean file's "
        "per-channel means, 0-255.")
    ap.add_argument("net", help="deploy .prototxt (one input)")
    ap.add_argument("weights", help=".caffemodel")
    ap.add_argument("images", nargs="+", help="image files")
    ap.add_argument("--mean", help="mean file (.binaryproto)")
    ap.add_argument("--labels", help="labels, one per output (synset_words.txt)")
    ap.add_argument("--top", type=positive(int), default=5, help="predictions per image (default 5)")
    return add_version(ap)


def _classify(args):
    from .. import load_caffe_net
    from .classify import classify
    net = load_caffe_net(args.net, args.weights).without_side_effects()
    for path, top in classify(net, args.images, args.mean, args.labels, args.top):
        print(f"---------- Prediction for {path} ----------")
        for score, label in top:
            print(f'{score:.4f} - "{label}"')


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["classify"]:
        return run_cli("caffe-convert classify", _classify, build_classify_parser().parse_args(argv[1:]))
    return run_cli("caffe-convert", _run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
