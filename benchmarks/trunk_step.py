"""CPU (or GPU) time of one pretraining step per net and method: the CFN's jigsaw, jigsaw on a torchvision trunk
(VISSL's head), PIRL on the same trunk; puzzles (or images) per second and the ratio to the CFN, measured in one run.

    python benchmarks/trunk_step.py [--device cpu] [--batch 32] [--steps 3] [--image 256] [--tile 64]
"""
import argparse
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from jigsaw.methods import build_model
from jigsaw.permutations import make_permutations
from jigsaw.pirl import MemoryBank
from jigsaw.pirl_views import ViewConfig, pirl_views
from jigsaw.recipes import recipe
from jigsaw.tiles import draw, make_puzzles

NETS = [("cfn", 1.0, "jigsaw"), ("resnet18", 0.25, "jigsaw"), ("resnet18", 0.25, "pirl"),
        ("resnet18", 1.0, "jigsaw"), ("resnet18", 1.0, "pirl"), ("resnet50", 1.0, "jigsaw"), ("resnet50", 1.0, "pirl")]


def _step(model, method, images, perms, pcfg, bank, g):
    if method == "pirl":
        image, tiles = pirl_views(images, ViewConfig(image_size=pcfg.tile, cell=pcfg.cell, tile=pcfg.tile), g)
        f, gt = model(image, tiles)
        rows = torch.arange(len(images)) % len(bank.memory)
        loss, _, f_unit = bank.loss(gt, f, rows.to(images.device), bank.draw_negatives(0))
        loss.backward()
        bank.update(rows.to(images.device), f_unit)
        return
    d = draw(len(images), len(perms), images.shape[1:3], pcfg, g)
    F.cross_entropy(model(make_puzzles(images, perms, d, pcfg)), d.label.to(images.device)).backward()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--image", type=int, default=256)
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--nets", default=None, help="comma-separated trunk:width:method, default all")
    args = ap.parse_args()
    nets = NETS if not args.nets else [(t, float(w), m) for t, w, m in (s.split(":") for s in args.nets.split(","))]
    dev = torch.device(args.device)
    pcfg = recipe("paper")
    perms = torch.from_numpy(make_permutations(1000)).to(dev)
    images = torch.randint(0, 256, (args.batch, args.image, args.image, 3), dtype=torch.uint8, device=dev)
    rows, base = [], None
    print(f"device {dev}, batch {args.batch}, {args.image} px images, {pcfg.tile} px tiles, {args.steps} timed steps "
          f"after one warm-up; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'net':<12}{'width':>6}{'method':>8}{'params':>12}{'s/step':>9}{'items/s':>9}{'x CFN':>7}")
    for trunk, width, method in nets:
        cfg = SimpleNamespace(trunk=trunk, width=width, method=method, dropout=0.5, init="caffe")
        model = build_model(cfg, 1000, pcfg.tile, 0).to(dev).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        bank = MemoryBank(10000, 128, 0, negatives=4096, device=dev) if method == "pirl" else None
        times = []
        for i in range(args.steps + 1):
            g = torch.Generator().manual_seed(i)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            _step(model, method, images, perms, pcfg, bank, g)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        s = sorted(times[1:])[len(times[1:]) // 2]
        base = base or s
        params = sum(p.numel() for p in model.parameters())
        print(f"{trunk:<12}{width:>6g}{method:>8}{params:>12,}{s:>9.3f}{args.batch / s:>9.1f}{s / base:>7.2f}")


if __name__ == "__main__":
    main()
