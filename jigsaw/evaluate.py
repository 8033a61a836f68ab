"""Pretext accuracy of trained CFN weights (a `jigsaw train` checkpoint or a CFN .caffemodel)."""
import numpy as np
import torch

from tools.errors import CaffeError

from .cfn import CFN
from .checkpoint import load_checkpoint
from .permutations import load_permutations
from .store import open_images
from .tiles import PuzzleConfig
from .train import evaluate_puzzles


def load_cfn(weights, permutations=None):
    """(CFN in eval mode, permutations array) from a checkpoint .pt or a .caffemodel."""
    if weights.endswith(".caffemodel"):
        model = CFN.from_caffe(None, weights)
        if permutations is None:
            raise CaffeError(f"{weights}: a .caffemodel carries no permutation set; pass --permutations")
        perms = load_permutations(permutations)
    else:
        ck = load_checkpoint(weights)
        if "model" not in ck or "widths" not in ck:
            raise CaffeError(f"{weights}: not a CFN checkpoint written by `jigsaw train`")
        n = ck["model"]["fc8.weight"].shape[0]
        model = CFN(n, width=dict(ck["widths"]))
        model.load_state_dict(ck["model"])
        perms = load_permutations(permutations) if permutations else ck["permutations"].numpy()
    if len(perms) and len(perms) != model.num_permutations:
        raise CaffeError(f"{len(perms)} permutations, but the weights predict {model.num_permutations}")
    return model.eval(), perms


def evaluate(weights, data, permutations=None, batch=64, repeats=1, seed=0, device=None):
    model, perms = load_cfn(weights, permutations)
    if not len(perms):
        raise CaffeError(f"{weights}: holds no permutation set; pass --permutations")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    source = open_images(data)
    indices = np.tile(np.arange(len(source)), repeats)
    m = evaluate_puzzles(model, source, indices, torch.from_numpy(perms).to(device), PuzzleConfig(),
                         device, batch, seed)
    return dict(m, n=len(indices), chance=1 / len(perms))
