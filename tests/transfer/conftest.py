"""Fixtures shared by the transfer tests."""
import pytest
import torch

from jigsaw.cfn import CFN
from tools.run.checkpoint import save_checkpoint


@pytest.fixture
def jigsaw_ckpt(tmp_path):
    cfn = CFN(8, width=0.125, seed=0)
    path = str(tmp_path / "last.pt")
    save_checkpoint(path, dict(model=cfn.state_dict(), widths=cfn.widths, iter=0,
                               permutations=torch.zeros(0, 9, dtype=torch.long)))
    return path
