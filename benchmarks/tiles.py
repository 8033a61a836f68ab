"""Puzzle-making throughput per recipe (draws + make_puzzles), against `paper` measured in the same run.

    python benchmarks/tiles.py [--device cuda] [--batch 256] [--iters 20]

`jps` adds per-channel shifts (a 3x larger gather index) and the colour mix in float64; `jps++` adds
MergeData and an MVN per tile in float64. Prints puzzles/s and the ratio to `paper`.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from jigsaw.permutations import make_permutations  # noqa: E402
from jigsaw.recipes import RECIPES, recipe  # noqa: E402
from jigsaw.tiles import draw, make_puzzles  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(name, device, batch, iters):
    cfg = recipe(name)
    side = max(cfg.min_image(), 256)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, side, side, 3), np.uint8)).to(device)
    perms = torch.from_numpy(make_permutations(100)).to(device)
    for i in range(iters + 2):
        if i == 2:
            sync(device)
            t0 = time.perf_counter()
        d = draw(batch, len(perms), (side, side), cfg, torch.Generator().manual_seed(i))
        make_puzzles(images, perms, d, cfg)
    sync(device)
    return batch * iters / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="default 256 on CUDA, 32 on CPU")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (256 if device.type == "cuda" else 32)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, " \
        f"{torch.get_num_threads()} threads)"
    print(f"device: {where}; batch {batch}; {args.iters} timed iterations after 2 warm-up")
    base = rate("paper", device, batch, args.iters)
    print(f"{'recipe':<10} {'puzzles/s':>10} {'vs paper':>9}")
    for name in RECIPES:
        r = base if name == "paper" else rate(name, device, batch, args.iters)
        print(f"{name:<10} {r:>10.0f} {r / base:>8.2f}x")


if __name__ == "__main__":
    main()
