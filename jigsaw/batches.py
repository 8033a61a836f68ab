"""Deterministic shuffled batches with a background reader thread.

Batch k of a run is a pure function of (seed, k): epoch e visits the training images in the order
of a permutation seeded by (seed, e), and batches are consecutive slices of that endless stream.
A resumed run therefore reads exactly the batches the uninterrupted run would have read.
"""
import functools
import queue
import threading

import numpy as np
import torch

from tools.run.errors import UserError
from tools.run.runtime import numpy_rng


def split_indices(n, val_fraction, seed):
    """(train, val) image indices: a seeded shuffle, the last `val_fraction` held out (>= 1 image)."""
    order = numpy_rng(seed, 7).permutation(n)
    n_val = 0 if val_fraction <= 0 else max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise UserError(f"{n} image(s) cannot hold out {n_val} for validation (--val-fraction {val_fraction:g}) and "
                        "keep any to train on: give more images, --val-fraction 0, or --val-data")
    return np.sort(order[: n - n_val]), np.sort(order[n - n_val:])


@functools.lru_cache(maxsize=2)
def _epoch_order(seed, epoch, n):
    # a permutation of 1.3M images takes ~40 ms: once per epoch, not once per batch
    order = numpy_rng(seed, 11, epoch).permutation(n)
    order.flags.writeable = False
    return order


def batch_indices(pool, batch, k, seed):
    """Positions of batch k in the endless epoch-shuffled stream over `pool` (an index array)."""
    n = len(pool)
    start = k * batch
    out, filled = np.empty(batch, dtype=np.int64), 0
    while filled < batch:
        epoch, offset = divmod(start + filled, n)
        order = _epoch_order(seed, epoch, n)
        take = min(batch - filled, n - offset)
        out[filled:filled + take] = pool[order[offset:offset + take]]
        filled += take
    return out


class BatchStream:
    """Reads batches k = start, start+1, ... of `source` ahead of use on a background thread.

    With a CUDA `device`, the thread reads each batch straight into one page-locked buffer, copies it
    to the GPU on its own stream and waits for that copy only: the training stream never waits for
    the host, and no batch is copied twice in host memory."""

    def __init__(self, source, pool, batch, seed, start=0, ahead=3, part=slice(None), device="cpu"):
        self.source, self.pool, self.batch, self.seed, self.part = source, pool, batch, seed, part
        self.device = torch.device(device)
        self.queue = queue.Queue(maxsize=ahead)
        self.k = start
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _load(self, idx, staging):
        if self.device.type != "cuda":
            images = self.source.read(idx)
            return images if torch.is_tensor(images) else torch.from_numpy(images)
        shape = (len(idx), *self.source.image_size, 3)
        if staging.get("buffer") is None or tuple(staging["buffer"].shape) != shape:
            staging["buffer"] = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            staging["stream"] = torch.cuda.Stream(self.device)
        images = self.source.read(idx, out=staging["buffer"].numpy())
        if torch.is_tensor(images):  # decoded on the device already
            return images
        with torch.cuda.stream(staging["stream"]):
            on_device = staging["buffer"].to(self.device, non_blocking=True)
        staging["stream"].synchronize()  # the buffer is reused for the next batch
        return on_device

    def _run(self):
        k, staging = self.k, {}
        try:
            while not self.stop.is_set():
                idx = batch_indices(self.pool, self.batch, k, self.seed)[self.part]
                item = (k, self._load(idx, staging))
                while not self.stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                k += 1
        except BaseException as e:  # surface reader errors in the training thread
            self.queue.put((None, e))

    def next(self):
        k, images = self.queue.get()
        if k is None:
            raise images
        if images.device.type == "cuda":  # made on the reader's stream, used on this one
            images.record_stream(torch.cuda.current_stream(images.device))
        return k, images

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
