"""The torch.compile path (used on the GPU) runs the same training code on the CPU and gives the same
loss curve as eager mode (tolerance 1e-4: compiled kernels may fuse and reorder float operations).
The fused LRN (an autograd.Function) is traced into the compiled graph with its own backward."""
import csv

import pytest
import torch

from jigsaw.train import TrainConfig, train

from .conftest import small_run


def _losses(out):
    with open(out / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def eager(tmp_path_factory, photo_store):
    tmp = tmp_path_factory.mktemp("compile")
    common = small_run(tmp, photo_store, 4, device="cpu")
    train(TrainConfig(out=str(tmp / "eager"), **common))
    return tmp, common, _losses(tmp / "eager")


@pytest.mark.skipif(not hasattr(torch, "compile"), reason="torch.compile unavailable")
@pytest.mark.parametrize("mode", [True, "max-autotune-no-cudagraphs"])
def test_compiled_training_matches_eager(eager, mode):
    tmp, common, losses = eager
    out = tmp / f"compiled-{mode}"
    train(TrainConfig(out=str(out), compile=mode, **common))
    compiled = _losses(out)
    assert len(losses) == len(compiled) == 3
    assert all(abs(a - b) < 1e-4 for a, b in zip(losses, compiled)), (losses, compiled)
