"""Prepared-store read speed: shuffled batches of 256 images (uint8, warm page cache), against h5py's own
fancy indexing measured in the same run.

    python benchmarks/store_read.py [--images 4000] [--size 256] [--batches 40]
"""
import argparse
import os
import sys
import tempfile
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jigsaw.batches import batch_indices  # noqa: E402
from jigsaw.store import ImageStore  # noqa: E402


def write_store(path, n, size):
    """A store in `jigsaw prepare`'s layout (one chunk per image, paths interleaved)."""
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, (64, size, size, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        images = f.create_dataset("images", (n, size, size, 3), np.uint8, chunks=(1, size, size, 3))
        paths = f.create_dataset("paths", (n,), h5py.string_dtype())
        for i in range(n):
            images[i] = block[i % 64]
            paths[i] = f"img_{i}.jpg"


def rate(read, pool, batches, batch=256):
    read(batch_indices(pool, batch, 0, 1))  # warm the page cache
    t0 = time.perf_counter()
    for k in range(1, batches + 1):
        read(batch_indices(pool, batch, k, 1))
    return batches * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=40)
    args = ap.parse_args()
    path = os.path.join(tempfile.mkdtemp(), "store.h5")
    write_store(path, args.images, args.size)
    store = ImageStore(path)
    pool = np.arange(args.images)
    ours = rate(store.read, pool, args.batches)
    buffer = np.empty((256, args.size, args.size, 3), np.uint8)  # the CUDA stream's page-locked buffer
    into = rate(lambda idx: store.read(idx, out=buffer), pool, args.batches)
    copied = rate(lambda idx: np.copy(store.read(idx)), pool, args.batches)  # read, then pin_memory()'s copy
    with h5py.File(path, "r") as f:
        ds = f["images"]

        def h5_read(idx):
            uniq, inv = np.unique(idx, return_inverse=True)
            return ds[uniq][inv]
        base = rate(h5_read, pool, max(4, args.batches // 8))
    gib = args.images * args.size * args.size * 3 / 2 ** 30
    print(f"store: {args.images} images of {args.size}x{args.size}x3 ({gib:.2f} GiB), shuffled batches of 256, "
          f"{os.cpu_count()} cores")
    print(f"{'reader':44s} {'images/s':>10s}")
    print(f"{'ours, a fresh array per batch (CPU path)':44s} {ours:>10.0f}")
    print(f"{'ours, into one reused buffer (CUDA path)':44s} {into:>10.0f}")
    print(f"{'ours, then a second copy (the former pinning)':44s} {copied:>10.0f}")
    print(f"{'baseline (h5py fancy indexing)':44s} {base:>10.0f}")
    print(f"ratio: {ours / base:.1f}x; target >= 20,000 images/s")
    big = np.arange(1_281_167)  # ImageNet's training set: the shuffled order of one batch
    t0 = time.perf_counter()
    for k in range(1, 41):
        batch_indices(big, 256, k, 2)
    cached = (time.perf_counter() - t0) / 40
    t0 = time.perf_counter()
    for k in range(1, 6):
        big[np.random.default_rng([2, 11, 0]).permutation(len(big))[k * 256:(k + 1) * 256]]
    per_batch = (time.perf_counter() - t0) / 5
    print(f"batch order over a 1,281,167-image pool: {1000 * cached:.2f} ms per batch (one epoch permutation, "
          f"amortised over 40 batches) vs {1000 * per_batch:.1f} ms (permuted per batch, as before)")


if __name__ == "__main__":
    main()
