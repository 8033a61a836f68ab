"""caffe-convert: Caffe .prototxt/.caffemodel to a PyTorch .pt (and back), or a summary table."""
import argparse
import os
import sys

from .checkpoint import load_checkpoint, save_checkpoint
from .cli_runner import run_cli
from .errors import CaffeError

PT_FORMAT = "caffe-convert/1"

EPILOG = """examples:
  caffe-convert deploy.prototxt weights.caffemodel -o model.pt
  caffe-convert deploy.prototxt weights.caffemodel --summary
  caffe-convert train_val.prototxt --phase TRAIN --input-shape data=256,27,64,64 --summary
  caffe-convert model.pt -o converted        # writes converted.prototxt + converted.caffemodel
"""


def _shape_arg(text):
    try:
        name, dims = text.split("=", 1)
        return name, tuple(int(d) for d in dims.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=N,C,H,W, got {text!r}") from None


def build_parser():
    ap = argparse.ArgumentParser(
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
    return ap


def _to_torch(args):
    from . import load_caffe_net
    from .prototxt import net_text

    net = load_caffe_net(args.net, args.weights, phase=args.phase, seed=args.seed,
                         input_shapes=dict(args.input_shape) or None)
    if args.weights:
        for line in str(net.report).splitlines():
            print(f"caffe-convert: {line}", file=sys.stderr)
    if args.summary:
        print(_summary(net, args.net))
    if args.output:
        payload = {"format": PT_FORMAT, "net": net_text(net.net_param),
                   "input_shapes": {k: list(v) for k, v in net.input_shapes.items()},
                   "state_dict": net.state_dict()}
        save_checkpoint(args.output, payload)
        print(f"wrote {args.output}")


def _summary(net, name):
    from .summary import summary
    return summary(net, title=f"{name}: {len(net.plan)} layers")


def _from_torch(args):
    from .prototxt import read_net
    from .writer import pair_stem, save_caffe_net

    payload = load_checkpoint(args.net, "a .pt written by caffe-convert")
    if not isinstance(payload, dict) or payload.get("format") != PT_FORMAT:
        raise CaffeError(f"{args.net}: not a .pt written by caffe-convert (no '{PT_FORMAT}' marker)")
    net_param = read_net(payload["net"], path=args.net)
    shapes = payload.get("input_shapes") or None
    if args.summary:
        from . import CaffeNet
        net = CaffeNet(net_param, input_shapes=shapes)
        net.load_state_dict(payload["state_dict"])
        print(_summary(net, args.net))
    if args.output:
        stem = pair_stem(args.output)
        save_caffe_net(payload["state_dict"], stem + ".prototxt", stem + ".caffemodel",
                       net_param=net_param, input_shapes=shapes)
        print(f"wrote {stem}.prototxt and {stem}.caffemodel")


def _run(args):
    if not args.summary and not args.output:
        raise CaffeError("nothing to do: give -o OUTPUT and/or --summary")
    if not os.path.exists(args.net):
        raise CaffeError(f"{args.net}: no such file")
    if args.net.endswith(".pt"):
        if args.weights:
            raise CaffeError("a .pt input already holds its weights; drop the second argument")
        _from_torch(args)
    else:
        _to_torch(args)


def main(argv=None):
    return run_cli("caffe-convert", _run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
