"""Pretext accuracy: of a model during training (validation) and of trained weights (`jigsaw evaluate`)."""
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from tools.run.errors import UserError
from tools.run.runtime import autocast, resolve_device, stream

from .checkpoint import read_cfn
from .store import check_layout, open_images
from .tiles import draw, make_puzzles


@torch.no_grad()
def evaluate_puzzles(model, source, indices, perms, pcfg, device, batch, seed, fast=False):
    """Pretext loss and top-1/top-5 accuracy on fixed, seeded puzzles (centre crops) of `indices`."""
    was = model.training
    model.eval()
    n, loss, top1, top5 = 0, 0.0, 0, 0
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        images = source.read(idx)
        images = (images if torch.is_tensor(images) else torch.from_numpy(images)).to(device)
        d = draw(len(idx), len(perms), images.shape[1:3], pcfg, stream(seed, 99991, start), train=False)
        with autocast(device, fast):
            logits = model(make_puzzles(images, perms, d, pcfg)).float()
        label = d.label.to(device)
        loss += float(F.cross_entropy(logits, label, reduction="sum"))
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += int((best[:, 0] == label).sum())
        top5 += int((best == label[:, None]).any(dim=1).sum())
        n += len(idx)
    model.train(was)
    return dict(loss=loss / max(n, 1), top1=top1 / max(n, 1), top5=top5 / max(n, 1))


def evaluate(weights: str, data: str, permutations: Optional[str] = None, batch: int = 64, repeats: int = 1,
             seed: int = 0, device: Optional[str] = None, recipe_name: Optional[str] = None) -> dict:
    model, perms, pcfg, _ = read_cfn(weights, permutations, recipe_name)
    if not len(perms):
        raise UserError(f"{weights}: holds no permutation set; pass --permutations")
    device = resolve_device(device or "auto")
    model.to(device)
    source = open_images(data, layout=pcfg.layout)
    check_layout(source, pcfg, data)
    indices = np.tile(np.arange(len(source)), repeats)
    m = evaluate_puzzles(model, source, indices, torch.from_numpy(perms).to(device), pcfg,
                         device, batch, seed)
    return dict(m, n=len(indices), chance=1 / len(perms), recipe=pcfg.recipe)
