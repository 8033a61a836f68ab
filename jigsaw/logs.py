"""A pretraining run's logs: log.csv (one row per iteration), val.csv, the displayed loss (Caffe's
average_loss window) and TensorBoard scalars; a non-finite loss ends the run in one line."""
import collections
import csv
import os
import time
from typing import List

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from tools.run.atomic import atomic_open
from tools.run.errors import UserError


class TrainLogs:
    """log.csv (one row per iteration) and val.csv; a resumed run drops rows at or after its start.
    Training rows wait on the device in `pending` and are written once per window (one sync)."""
    TRAIN = ["iter", "loss", "top1", "lr", "puzzles_per_s"]
    VAL = ["iter", "loss", "top1", "top5"]

    def __init__(self, run, monitored=()):  # jigsaw.train._Run; monitored: the monitor's val.csv columns
        self.run, self.enabled = run, run.rank == 0
        self.cols = {"train": self.TRAIN, "val": self.VAL + list(monitored)}
        self.paths = {"train": os.path.join(run.cfg.out, "log.csv"), "val": os.path.join(run.cfg.out, "val.csv")}
        self.pending: List[tuple] = []
        self.window = time.perf_counter()
        self.trained_s = 0.0  # training seconds since the last validation
        # the displayed loss is the mean of the last average_loss iterations, as Caffe's solver shows it
        self.recent = collections.deque(maxlen=max(1, run.sp.average_loss))
        if self.enabled:
            for kind, cols in self.cols.items():
                rows = []
                if run.start and os.path.exists(self.paths[kind]):
                    with open(self.paths[kind]) as f:
                        rows = [r for r in csv.DictReader(f) if int(r["iter"]) < run.start]
                with atomic_open(self.paths[kind], "w") as f:  # a kill now must not lose the kept rows
                    w = csv.DictWriter(f, cols, extrasaction="ignore")  # a resume may drop the monitor
                    w.writeheader()
                    w.writerows(rows)

    def write(self, kind, row):
        if self.enabled:
            with open(self.paths[kind], "a", newline="") as f:
                csv.DictWriter(f, self.cols[kind]).writerow(row)

    def flush(self):
        """Write the iterations since the last flush; a non-finite loss stops the run."""
        if not self.pending:
            return
        run, sp = self.run, self.run.sp
        stats = torch.stack([torch.stack(p[1:3]) for p in self.pending]).double()
        if run.world > 1:
            dist.all_reduce(stats)
            stats[:, 0] /= run.world
        stats = stats.cpu().numpy()  # the sync
        now = time.perf_counter()
        per_iter = run.cfg.batch_size * sp.iter_size
        rate = per_iter * len(self.pending) / (now - self.window)
        self.trained_s += now - self.window
        for (i, _, _, lr), (loss, hits) in zip(self.pending, stats):
            self.write("train", dict(iter=i, loss=f"{loss:.6f}", top1=f"{hits / per_iter:.4f}",
                                     lr=f"{lr:.8g}", puzzles_per_s=f"{rate:.1f}"))
            if not np.isfinite(loss):
                self.pending.clear()
                raise diverged(run, i, f"the loss is {loss}")
            self.recent.append(float(loss))
            run.board.add("train/loss", loss, i)
            run.board.add("train/top1", hits / per_iter, i)
            run.board.add("train/lr", lr, i)
            if sp.display and i % sp.display == 0:
                tqdm.write(f"Iteration {i}, loss = {np.mean(self.recent):.4f}, lr = {lr:.6g}, {rate:.0f} puzzles/s")
        self.pending.clear()
        self.window = now


def diverged(run, it, what):
    held = f"{run.last} keeps iteration {run.saved}" if run.saved is not None else "no checkpoint was written"
    hint = "try a lower --base-lr"
    if run.cfg.init == "msra" and run.sp.type in ("SGD", "Nesterov", ""):
        hint = (f"He init with {run.sp.type or 'SGD'} diverges on the CFN's 0-255 inputs; use Adam "
                "(--solver cfn_solver_short) or --init caffe")
    return UserError(f"iteration {it}: {what}; training stopped ({held}); {hint}")
