"""PIRL's two losses on a small image set (issue 34's diagnosis): NCE with Z fixed at the first step (the paper's,
VISSL's default) against InfoNCE (VISSL's loss_type cross_entropy), same net, views, bank and draws. Prints,
per epoch, the share of images whose f(image) scores its own bank entry above every other entry ("bank hit"),
whether g(tiles) finds its own image's f among the set ("g->f"), and how alike the embeddings are (mean cosine
of f over the set: 1 is collapse).

    python benchmarks/pirl_loss.py --data /work/runs/jig_r18/fmnist160.h5 --images 256 --epochs 30

Needs a prepared store (`jigsaw prepare`, or the one `benchmarks/ssl_probe.py` writes). CPU: ~2.5 s an epoch of
256 images at the defaults (resnet18 x 0.25, 64 px image view, 48 px tiles)."""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from jigsaw.pirl import MemoryBank  # noqa: E402
from jigsaw.pirl_views import ViewConfig, pirl_views  # noqa: E402
from jigsaw.store import open_images  # noqa: E402
from jigsaw.trunk_nets import PIRLNet  # noqa: E402
from tools.nets.trunks import build_trunk  # noqa: E402
from tools.run.runtime import seed_global  # noqa: E402


@torch.no_grad()
def measure(net, bank, images, views):
    """(bank hit, g->f match, mean cosine of f) over the whole set, eval mode, one fixed draw of views."""
    net.eval()
    image, tiles = pirl_views(images, views, torch.Generator().manual_seed(5))
    f, g = net(image, tiles)
    f, g = F.normalize(f, dim=1), F.normalize(g, dim=1)
    own = torch.arange(len(f))
    hit = float(((f @ bank.memory.t()).argmax(1) == own).float().mean())
    match = float(((g @ f.t()).argmax(1) == own).float().mean())
    net.train()
    return hit, match, float((f @ f.t()).mean())


def train(images, loss_type, args):
    seed_global(args.seed)
    net = PIRLNet(build_trunk("resnet18", args.width))
    bank = MemoryBank(len(images), 128, args.seed, args.temperature, 0.5, 32000, args.weight, loss_type=loss_type)
    opt = torch.optim.Adam(net.parameters(), args.lr)
    views = ViewConfig(image_size=args.image_size, cell=args.cell, tile=args.tile, image_scale=(args.scale, 1.0))
    g, k, rows_out = torch.Generator().manual_seed(args.seed), 0, []
    for epoch in range(1, args.epochs + 1):
        t0, total = time.time(), 0.0
        for rows in torch.randperm(len(images), generator=g).split(args.batch_size):
            image, tiles = pirl_views(images[rows], views, g)
            f, gt = net(image, tiles)
            loss, _, f_unit = bank.loss(gt, f, rows, bank.draw_negatives(k))
            opt.zero_grad()
            loss.backward()
            opt.step()
            bank.update(rows, f_unit)
            total, k = total + float(loss.detach()) * len(rows), k + 1
        if epoch in (1, args.epochs) or epoch % args.every == 0:
            hit, match, cos = measure(net, bank, images, views)
            rows_out.append((loss_type, epoch, total / len(images), hit, match, cos, time.time() - t0))
            print("{:8s} {:5d} {:10.3f} {:9.3f} {:7.3f} {:7.3f} {:6.1f}".format(*rows_out[-1]), flush=True)
    return rows_out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a prepared store (.h5)")
    ap.add_argument("--images", type=int, default=256, help="the first N images of the store (256)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--every", type=int, default=5, help="measure every N epochs (5)")
    ap.add_argument("--losses", nargs="+", default=["nce", "infonce"], choices=["nce", "infonce"])
    ap.add_argument("--weight", type=float, default=0.5, help="lambda: the tiles' term (0.5; 0: NPID alone)")
    ap.add_argument("--scale", type=float, default=0.08, help="the image view's smallest crop scale (0.08)")
    ap.add_argument("--temperature", type=float, default=0.07)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (1e-3)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--cell", type=int, default=53)
    ap.add_argument("--tile", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    source = open_images(args.data)
    images = torch.from_numpy(np.asarray(source.read(np.arange(min(args.images, len(source))))))
    print(f"{len(images)} images of {args.data}; lambda {args.weight}, image crop scale {args.scale}-1, "
          f"T {args.temperature}, Adam lr {args.lr}, batch {args.batch_size}")
    print(f"{'loss':8s} {'epoch':>5s} {'mean loss':>10s} {'bank hit':>9s} {'g->f':>7s} {'cos f':>7s} {'s/ep':>6s}")
    for loss_type in args.losses:
        train(images, loss_type, args)


if __name__ == "__main__":
    main()
