"""The torch.compile path (used on the GPU) runs the same training code on the CPU and gives the same
loss curve as eager mode (tolerance 1e-4: compiled kernels may fuse and reorder float operations)."""
import csv

import pytest
import torch

from jigsaw.permutations import make_permutations, save_permutations
from jigsaw.train import TrainConfig, train


def _losses(out):
    with open(out / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile unavailable")
def test_compiled_training_matches_eager(tmp_path, photo_store):
    perms = str(tmp_path / "p.npy")
    save_permutations(perms, make_permutations(4))
    common = dict(data=photo_store, permutations=perms, batch_size=8, width=0.125, max_iter=3, test_interval=0,
                  snapshot=0, device="cpu", progress=False, val_fraction=0.25, dropout=0.0)
    train(TrainConfig(out=str(tmp_path / "eager"), **common))
    train(TrainConfig(out=str(tmp_path / "compiled"), compile=True, **common))
    eager, compiled = _losses(tmp_path / "eager"), _losses(tmp_path / "compiled")
    assert len(eager) == len(compiled) == 3
    assert all(abs(a - b) < 1e-4 for a, b in zip(eager, compiled)), (eager, compiled)
