"""CFN pretraining throughput in puzzles/s: model step, end to end from the HDF5 store, end to end
from a JPEG folder; ours (the real `jigsaw train` path) against a plain baseline measured in the same
run (fp32, a Python loop over the nine branches, a PIL loader that cuts tiles image by image).

    python benchmarks/pretrain_throughput.py [--device cuda] [--width 1.0] [--batch 256] [--iters 30]
                                             [--compile [MODE]] [--ablate]

--ablate adds model-step rows with one optimisation taken away at a time (torch.compile, bf16,
channels_last, the fused LRN, folding the nine branches), so the table says what each one buys.

On CPU the defaults use a narrow width (0.25) and a small batch so the run takes minutes; the table
says which width and batch it measured. Photos are scikit-image's bundled samples, cut into 256 px
crops and written as JPEGs (the folder case) and as a prepared store.
"""
import argparse
import csv
import os
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jigsaw.cfn import CFN  # noqa: E402
from jigsaw.permutations import make_permutations, save_permutations  # noqa: E402
from jigsaw.store import prepare  # noqa: E402
from jigsaw.train import TrainConfig, train  # noqa: E402
from tools.caffe.prototxt import read_solver  # noqa: E402
from tools.caffe.solver import CaffeSolver  # noqa: E402


def make_photos(folder, count):
    from PIL import Image
    import skimage.data as data

    names = ["astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field",
             "immunohistochemistry", "camera", "coins", "moon"]
    os.makedirs(folder, exist_ok=True)
    rng, n = np.random.default_rng(0), 0
    while n < count:
        im = Image.fromarray(np.asarray(getattr(data, names[n % len(names)])())).convert("RGB")
        w, h = im.size
        x, y = int(rng.integers(0, max(1, w - 256))), int(rng.integers(0, max(1, h - 256)))
        im.crop((x, y, x + 256, y + 256)).resize((320, 320)).save(os.path.join(folder, f"{n:05d}.jpg"), quality=90)
        n += 1


class PlainCFN(torch.nn.Module):
    """The baseline model: the same layers, the nine branches run one after another in Python."""

    def __init__(self, cfn):
        super().__init__()
        self.cfn = cfn

    def forward(self, tiles):
        feats = [self.cfn.trunk(tiles[:, t]) for t in range(9)]
        x = F.dropout(F.relu(self.cfn.fc7(torch.cat(feats, 1))), 0.5, self.training)
        return self.cfn.fc8(x)


class PlainPuzzles(torch.utils.data.Dataset):
    """The baseline loader: PIL decode, resize, crop, cut nine tiles, normalise each, per image."""

    def __init__(self, folder, perms):
        self.files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
        self.perms = perms

    def __len__(self):
        return 10 ** 9

    def __getitem__(self, i):
        from PIL import Image
        rng = np.random.default_rng(i)
        img = Image.open(self.files[i % len(self.files)]).convert("RGB").resize((256, 256), Image.BILINEAR)
        y0, x0 = rng.integers(0, 2, 2)
        img = img.crop((x0, y0, x0 + 255, y0 + 255))
        tiles = []
        for c in range(9):
            r, q = divmod(c, 3)
            dy, dx = rng.integers(0, 22, 2)
            t = np.asarray(img.crop((q * 85 + dx, r * 85 + dy, q * 85 + dx + 64, r * 85 + dy + 64)), np.float32)
            t = torch.from_numpy(t).permute(2, 0, 1)
            tiles.append(t - t.mean(dim=(1, 2), keepdim=True))
        label = int(rng.integers(len(self.perms)))
        return torch.stack([tiles[j] for j in self.perms[label]]), label


def model_step_rate(model, device, batch, iters, perms_n, fast, compile_mode=None):
    solver = CaffeSolver(model.cfn.param_groups() if isinstance(model, PlainCFN) else model.param_groups(),
                         read_solver('base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed"'))
    tiles = torch.randn(batch, 9, 3, 64, 64, device=device) * 38  # real tiles: 0-255 scale minus mean
    label = torch.randint(0, perms_n, (batch,), device=device)
    net = torch.compile(model, mode=None if compile_mode == "default" else compile_mode) if compile_mode else model
    for i in range(iters + 3):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=fast):
            loss = F.cross_entropy(net(tiles).float(), label)
        loss.backward()
        solver.step()
        solver.zero_grad(set_to_none=True)
    sync(device)
    return batch * iters / (time.perf_counter() - t0)


def baseline_end_to_end(model, folder, perms, device, batch, iters, workers):
    loader = torch.utils.data.DataLoader(PlainPuzzles(folder, perms), batch_size=batch, num_workers=workers)
    solver = CaffeSolver(model.cfn.param_groups(), read_solver('base_lr: 0.01 momentum: 0.9 lr_policy: "fixed"'))
    it = iter(loader)
    for i in range(iters + 3):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        tiles, label = next(it)
        loss = F.cross_entropy(model(tiles.to(device)), label.to(device))
        loss.backward()
        solver.step()
        solver.zero_grad(set_to_none=True)
    sync(device)
    return batch * iters / (time.perf_counter() - t0)


def ours_end_to_end(data, perms_path, out, device, batch, iters, width, workers, fast, compile_mode=None,
                    decode="cpu"):
    """`jigsaw train` itself; the log is flushed every `window` iterations (the only device syncs), and
    the first window (warm-up, compilation) is not timed."""
    window = 10 if device.type == "cuda" else 4
    total = window * (1 + -(-iters // window))
    os.makedirs(out, exist_ok=True)
    solver = os.path.join(out, "solver.prototxt")
    with open(solver, "w") as f:
        f.write(f'base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "step" gamma: 0.1 '
                f'stepsize: 100000 max_iter: {total} display: 0 snapshot: 0 snapshot_after_train: false\n')
    train(TrainConfig(data=data, permutations=perms_path, out=os.path.join(out, "run"), solver=solver,
                      batch_size=batch, width=width, device=device.type, workers=workers,
                      precision="bf16" if fast else "fp32",
                      compile=compile_mode, decode=decode, log_every=window, test_interval=0, progress=False,
                      val_fraction=0))
    with open(os.path.join(out, "run", "log.csv")) as f:
        rows = list(csv.DictReader(f))[window:]
    return batch * len(rows) / sum(batch / float(r["puzzles_per_s"]) for r in rows)


def train_flops_per_puzzle(cfn, device, perms_n):
    """FLOPs of one training step (forward + backward) per puzzle, counted by PyTorch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode
    tiles = torch.randn(2, 9, 3, cfn.tile, cfn.tile, device=device)
    label = torch.randint(0, perms_n, (2,), device=device)
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(cfn(tiles), label).backward()
    cfn.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 2


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def ablation_rows(args, device, batch, iters, width, compile_mode):
    """Model step with one optimisation taken away at a time, each measured in this run."""
    import jigsaw.cfn as cfn_module
    cuda = device.type == "cuda"

    def rate(fast=cuda, channels_last=cuda, fused_lrn=True, mode=compile_mode):
        torch.manual_seed(0)
        model = CFN(args.perms, width).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        fused = cfn_module.lrn_across
        if not fused_lrn:  # the composite PyTorch op in place of ours, for this measurement only
            cfn_module.lrn_across = lambda t, *a: F.local_response_norm(t, *a)
        try:
            return model_step_rate(model, device, batch, iters, args.perms, fast, mode)
        finally:
            cfn_module.lrn_across = fused

    rows = []
    if compile_mode:
        rows.append(("- torch.compile", rate(mode=None)))
    if cuda:
        rows.append(("- bf16 (fp32 instead)", rate(fast=False)))
        rows.append(("- channels_last", rate(channels_last=False)))
    rows.append(("- fused LRN (F.local_response_norm)", rate(fused_lrn=False)))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--width", type=float, default=None, help="default 1.0 on CUDA, 0.25 on CPU")
    ap.add_argument("--batch", type=int, default=None, help="default 256 on CUDA, 32 on CPU")
    ap.add_argument("--iters", type=int, default=None, help="timed iterations (default 30 CUDA, 8 CPU)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--perms", type=int, default=1000)
    ap.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                    help="torch.compile mode for our rows (default, reduce-overhead, max-autotune)")
    ap.add_argument("--ablate", action="store_true", help="add one row per optimisation taken away")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="peak for the fraction column (default 790, the H100's bf16 figure, on CUDA)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    width = args.width or (1.0 if cuda else 0.25)
    batch = args.batch or (256 if cuda else 32)
    iters = args.iters or (30 if cuda else 8)
    mode = args.compile
    tmp = tempfile.mkdtemp(prefix="cfn-bench-")
    folder, store = os.path.join(tmp, "jpegs"), os.path.join(tmp, "store.h5")
    make_photos(folder, max(2 * batch, 64))
    prepare(folder, store, progress=False)
    perms = make_permutations(args.perms)
    perms_path = os.path.join(tmp, "perms.npy")
    save_permutations(perms_path, perms)
    torch.manual_seed(0)
    cfn = CFN(args.perms, width).to(device)
    ours = "ours (" + ", ".join(["folded", "fused LRN"] + (["bf16", "channels_last"] if cuda else ["fp32"])
                                + ([f"compile {mode}"] if mode else [])) + ")"
    rows = [("model step", ours, model_step_rate(cfn.to(memory_format=torch.channels_last) if cuda else cfn,
                                                 device, batch, iters, args.perms, cuda, mode))]
    if args.ablate:
        rows += [("model step", impl, r) for impl, r in ablation_rows(args, device, batch, iters, width, mode)]
    rows.append(("model step", "baseline (9-branch loop, fp32)",
                 model_step_rate(PlainCFN(CFN(args.perms, width).to(device)), device, batch, iters, args.perms, False)))
    rows.append(("end to end, HDF5 store", "ours (jigsaw train)",
                 ours_end_to_end(store, perms_path, os.path.join(tmp, "a"), device, batch, iters, width, 0, cuda,
                                 mode)))
    rows.append(("end to end, JPEG folder", "ours (jigsaw train)",
                 ours_end_to_end(folder, perms_path, os.path.join(tmp, "b"), device, batch, iters, width,
                                 args.workers, cuda, mode)))
    rows.append(("end to end, JPEG folder", "ours (jigsaw train --decode device)",
                 ours_end_to_end(folder, perms_path, os.path.join(tmp, "c"), device, batch, iters, width, 0, cuda,
                                 mode, decode="device")))
    rows.append(("end to end, JPEG folder", "baseline (PIL loader + loop)",
                 baseline_end_to_end(PlainCFN(CFN(args.perms, width).to(device)), folder, perms, device, batch,
                                     iters, args.workers)))
    flops = train_flops_per_puzzle(CFN(args.perms, width).to(device), device, args.perms)
    peak = args.peak_tflops or (790.0 if cuda else None)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({os.cpu_count()} cores)"
    print(f"device: {name}; torch {torch.__version__}; width {width}; batch {batch}; {iters} timed "
          f"iterations; {args.perms} permutations; {args.workers} loader workers")
    print(f"training step: {flops / 1e9:.3f} GFLOP per puzzle at width {width} (forward + backward, counted)")
    print(f"{'case':24s} {'implementation':52s} {'puzzles/s':>10s} {'TFLOP/s':>8s} {'of peak':>8s}")
    for case, impl, rate in rows:
        tflops = rate * flops / 1e12
        frac = f"{100 * tflops / peak:7.2f}%" if peak else "     n/a"
        print(f"{case:24s} {impl:52s} {rate:>10.1f} {tflops:>8.3f} {frac}")
    get = lambda case, prefix: next(r for c, i, r in rows if c == case and i.startswith(prefix))  # noqa: E731
    folder_base = get("end to end, JPEG folder", "baseline")
    best_folder = max(r for c, i, r in rows if c == "end to end, JPEG folder" and i.startswith("ours"))
    print(f"model step ratio ours/baseline: {rows[0][2] / get('model step', 'baseline'):.2f}x; "
          f"JPEG folder ratio (best of ours): {best_folder / folder_base:.2f}x; "
          f"store vs baseline folder: {get('end to end, HDF5 store', 'ours') / folder_base:.2f}x")


if __name__ == "__main__":
    main()
