"""Pretext accuracy of trained CFN weights (a `jigsaw train` checkpoint or a CFN .caffemodel)."""
import numpy as np
import torch

from tools.errors import CaffeError

from .cfn import CFN, cfn_from_checkpoint
from .checkpoint import load_checkpoint
from .permutations import load_permutations
from .recipes import DEFAULT, recipe, recipe_of
from .store import check_layout, open_images
from .train import evaluate_puzzles


def load_cfn(weights, permutations=None, recipe_name=None):
    """(CFN in eval mode, permutations array, PuzzleConfig) from a checkpoint .pt (its recorded
    recipe; `recipe_name` must agree) or a .caffemodel (`recipe_name`, default jps)."""
    if weights.endswith(".caffemodel"):
        model = CFN.from_caffe(None, weights)
        if permutations is None:
            raise CaffeError(f"{weights}: a .caffemodel carries no permutation set; pass --permutations")
        perms = load_permutations(permutations)
        pcfg = recipe(recipe_name or DEFAULT)
    else:
        ck = load_checkpoint(weights)
        model = cfn_from_checkpoint(ck, weights)
        perms = load_permutations(permutations) if permutations else ck["permutations"].numpy()
        pcfg = recipe_of(ck)
        if recipe_name and recipe_name != pcfg.recipe:
            raise CaffeError(f"{weights}: trained with recipe '{pcfg.recipe}', not '{recipe_name}'")
    if len(perms) and len(perms) != model.num_permutations:
        raise CaffeError(f"{len(perms)} permutations, but the weights predict {model.num_permutations}")
    return model.eval(), perms, pcfg


def evaluate(weights, data, permutations=None, batch=64, repeats=1, seed=0, device=None, recipe_name=None):
    model, perms, pcfg = load_cfn(weights, permutations, recipe_name)
    if not len(perms):
        raise CaffeError(f"{weights}: holds no permutation set; pass --permutations")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    source = open_images(data, layout=pcfg.layout)
    check_layout(source, pcfg, data)
    indices = np.tile(np.arange(len(source)), repeats)
    m = evaluate_puzzles(model, source, indices, torch.from_numpy(perms).to(device), pcfg,
                         device, batch, seed)
    return dict(m, n=len(indices), chance=1 / len(perms), recipe=pcfg.recipe)
