"""Where a CFN training step spends its time: torch.profiler over the real step (puzzles cut on the
device, forward, backward, Caffe's SGD), grouped by kind of work and listed by operator.

    python benchmarks/profile_step.py [--device cuda] [--width 1.0] [--batch 256] [--compile] [--trace t.json]

On CUDA the shares are of device (kernel) time, elsewhere of CPU time; --fp32 turns off bf16 and
channels_last on CUDA. Profile before optimising: the table says which change can pay.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jigsaw.cfn import CFN  # noqa: E402
from jigsaw.permutations import make_permutations  # noqa: E402
from jigsaw.recipes import recipe  # noqa: E402
from jigsaw.tiles import draw, make_puzzles  # noqa: E402
from tools.caffe.prototxt import read_solver  # noqa: E402
from tools.caffe.solver import CaffeSolver  # noqa: E402

# operator name fragments -> kind of work (first match wins)
GROUPS = [
    ("convolution", ("conv", "cudnn", "winograd", "implicit_gemm", "xmma", "mkldnn", "dgrad", "wgrad")),
    ("fully connected", ("addmm", "mm", "gemm", "linear", "cublas", "cutlass")),
    ("pooling", ("pool",)),
    ("LRN", ("_CrossChannelLRN", "local_response", "pow")),
    ("ReLU", ("relu", "clamp_min", "threshold")),
    ("solver (SGD)", ("_foreach", "multi_tensor", "caffe_sgd")),
    ("puzzle tiles", ("gather", "index", "tiles")),
    ("loss / softmax", ("cross_entropy", "log_softmax", "nll_loss")),
]


def group_of(name):
    low = name.lower()
    for group, keys in GROUPS:
        if any(k.lower() in low for k in keys):
            return group
    return "other (elementwise, copies, casts)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--width", type=float, default=None, help="default 1.0 on CUDA, 0.25 on CPU")
    ap.add_argument("--batch", type=int, default=None, help="default 256 on CUDA, 32 on CPU")
    ap.add_argument("--steps", type=int, default=5, help="profiled steps after 3 warm-up steps")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast / channels_last on CUDA")
    ap.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE")
    ap.add_argument("--trace", help="also write a Chrome trace (open in chrome://tracing or Perfetto)")
    ap.add_argument("--top", type=int, default=15, help="operators listed (default 15)")
    ap.add_argument("--recipe", default="jps", help="puzzle recipe (default jps)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    fast = cuda and not args.fp32
    width, batch = args.width or (1.0 if cuda else 0.25), args.batch or (256 if cuda else 32)
    torch.manual_seed(0)
    model = CFN(100, width).to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model, mode=None if args.compile == "default" else args.compile) if args.compile else model
    solver = CaffeSolver(model.param_groups(), read_solver('lr_policy: "fixed" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005'))
    perms = torch.from_numpy(make_permutations(100)).to(device)
    pcfg = recipe(args.recipe)
    side = pcfg.min_image()
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), np.uint8)).to(device)

    def step(i):
        with record_function("tiles"):
            d = draw(batch, len(perms), images.shape[1:3], pcfg, torch.Generator().manual_seed(i))
            tiles = make_puzzles(images, perms, d, pcfg)
        with torch.autocast(device.type, torch.bfloat16, enabled=fast):
            logits = net(tiles)
        F.cross_entropy(logits.float(), d.label.to(device)).backward()
        with record_function("caffe_sgd"):
            solver.step()
            solver.zero_grad(set_to_none=True)

    for i in range(3):
        step(i)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for i in range(args.steps):
            step(100 + i)
        if cuda:
            torch.cuda.synchronize()
    attr = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    total = sum(getattr(e, attr) for e in events)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}; torch {torch.__version__}; width {width}; batch {batch}; "
          f"{'bf16 + channels_last' if fast else 'fp32'}; compile {args.compile or 'off'}; {args.steps} steps")
    print(f"{'device' if cuda else 'CPU'} time per step: {total / args.steps / 1000:.1f} ms "
          f"({batch * args.steps / (total / 1e6):.0f} puzzles/s if nothing else ran)")
    shares = {}
    for e in events:
        shares[group_of(e.key)] = shares.get(group_of(e.key), 0) + getattr(e, attr)
    print(f"\n{'kind of work':36s} {'share':>7s} {'ms/step':>8s}")
    for group, t in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"{group:36s} {100 * t / total:6.1f}% {t / args.steps / 1000:8.2f}")
    print(f"\n{'operator':60s} {'share':>7s} {'calls':>6s}")
    for e in sorted(events, key=lambda e: -getattr(e, attr))[:args.top]:
        print(f"{e.key[:60]:60s} {100 * getattr(e, attr) / total:6.1f}% {e.count:6d}")
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"\nwrote {args.trace}")


if __name__ == "__main__":
    main()
