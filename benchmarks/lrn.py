"""The CFN's LRN, forward + backward: our fused op (tools.caffe.layers.lrn.lrn_across) against PyTorch's
F.local_response_norm, measured in the same run at the CFN's two LRN shapes.

    python benchmarks/lrn.py [--device cuda] [--batch 256] [--compile]

Columns: milliseconds per forward + backward (median), memory the autograd graph keeps for the
backward, and with --compile the number of kernels torch.compile generates for forward + backward.
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.caffe.layers.lrn import lrn_across  # noqa: E402

IMPLS = {
    "ours (one op, Caffe's backward)": lambda t: lrn_across(t, 5, 1e-4, 0.75, 1.0),
    "baseline F.local_response_norm": lambda t: F.local_response_norm(t, 5, 1e-4, 0.75, 1.0),
}


def saved_bytes(fn, x):
    seen = {}

    def pack(t):
        seen[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    key_x = (x.untyped_storage().data_ptr(), x.dtype)
    return sum(v for k, v in seen.items() if k != key_x)  # the input is kept alive anyway


def time_ms(fn, x, reps, device):
    g = torch.ones_like(x)
    times = []
    for i in range(reps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        y = fn(x)
        y.backward(g)
        x.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def kernel_count(fn, x):
    from torch._inductor import metrics
    torch._dynamo.reset()
    metrics.reset()
    compiled = torch.compile(fn)
    compiled(x).backward(torch.ones_like(x))
    x.grad = None
    return metrics.generated_kernel_count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="puzzles (x9 tiles); default 256 CUDA, 32 CPU")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default bf16 on CUDA)")
    ap.add_argument("--compile", action="store_true", help="also count torch.compile's kernels")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (256 if cuda else 32)
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    print(f"device: {torch.cuda.get_device_name(device) if cuda else f'CPU ({os.cpu_count()} cores)'}; "
          f"torch {torch.__version__}; {batch} puzzles = {9 * batch} tiles; {dtype}")
    head = f"{'shape':22s} {'implementation':34s} {'ms fwd+bwd':>10s} {'saved MiB':>10s}"
    print(head + (f" {'kernels':>8s}" if args.compile else ""))
    for c, side in ((96, 13), (256, 6)):  # after pool1 and pool2 of a 64 px tile
        x = (torch.randn(9 * batch, c, side, side, device=device) * 20).to(dtype)
        if cuda:
            x = x.to(memory_format=torch.channels_last)
        x.requires_grad_()
        rows = []
        for name, fn in IMPLS.items():
            ms = time_ms(fn, x, args.reps, device)
            mib = saved_bytes(fn, x) / 2 ** 20
            kc = kernel_count(fn, x) if args.compile else None
            rows.append(ms)
            shape = f"({9 * batch},{c},{side},{side})"
            print(f"{shape:22s} {name:34s} {ms:>10.2f} {mib:>10.1f}" + (f" {kc:>8d}" if kc is not None else ""))
        print(f"{'':22s} {'speed-up ours/baseline':34s} {rows[1] / rows[0]:>9.2f}x")


if __name__ == "__main__":
    main()
