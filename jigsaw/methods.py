"""The pretext methods `jigsaw train` runs, one interface for its loop: `loss(images, k, part)` -> (loss, hits) for
iteration k, `validate(...)`, `payload(...)` / `restore(path)` for checkpoints. `jigsaw` classifies the
permutation (the CFN, or any torchvision trunk with VISSL's head); `pirl` makes an image and its shuffled tiles
embed alike (pirl.py). The CFN path is the one it always was: same draws, same order, same weights."""
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from tools.nets.trunks import build_trunk
from tools.run.runtime import autocast, seed_global, seed_of, stream

from .batches import batch_indices
from .cfn import CFN
from .evaluate import evaluate_puzzles
from .pirl import MemoryBank
from .pirl_views import ViewConfig, pirl_views
from .tiles import draw, make_puzzles
from .trunk_nets import PIRLNet, TrunkPuzzleNet

class JigsawMethod:
    """Predict which permutation shuffled the nine tiles (cross entropy over the permutation set)."""
    name = "jigsaw"

    def __init__(self, run, model):
        self.run, self.model = run, model
        self.chance = 1 / len(run.perms_np)
        self.input_size = run.pcfg.tile  # what the trunk sees: tiles

    def loss(self, net, images, k, part):
        run, cfg = self.run, self.run.cfg
        d = draw(cfg.batch_size, len(run.perms_np), images.shape[1:3], run.pcfg, stream(cfg.seed, k)).slice(part)
        seed_global(seed_of(cfg.seed, 3, k, run.rank))
        tiles = make_puzzles(images.to(run.device, non_blocking=True), run.perms, d, run.pcfg)
        label = d.label.to(run.device, non_blocking=True)
        with autocast(run.device, run.fast):
            logits = net(tiles)
        loss = F.cross_entropy(logits.float(), label)
        return loss, (logits.detach().argmax(1) == label).sum()

    def after_step(self):
        pass

    def validate(self):
        run = self.run
        return evaluate_puzzles(self.model, run.val_source, run.val_pool, run.perms, run.pcfg, run.device,
                                run.cfg.batch_size, run.cfg.seed, run.fast)

    def state(self):
        return {}

    def load_state(self, state):
        pass


class PIRLMethod:
    """PIRL: NCE of the tiles' and the image's embeddings against the image's memory-bank entry."""
    name = "pirl"

    def __init__(self, run, model: PIRLNet):
        self.run, self.model = run, model
        cfg = run.cfg
        self.views = ViewConfig(image_size=cfg.pirl_image_size or run.pcfg.tile, cell=run.pcfg.cell,
                                tile=run.pcfg.tile)
        self.bank = MemoryBank(len(run.train_pool), model.image_head.out_features, cfg.seed, cfg.pirl_temperature,
                               cfg.pirl_momentum, cfg.pirl_negatives, cfg.pirl_lambda, run.device, cfg.pirl_loss)
        # validation matches each image's tiles among a batch of held-out images: chance is one in a batch
        self.chance = 1 / max(1, min(cfg.batch_size, len(np.unique(run.val_pool))))
        self.input_size = self.views.image_size
        self._pending = []  # (rows, f) of each pass of the step, for the bank after it

    def loss(self, net, images, k, part):
        run, cfg = self.run, self.run.cfg
        idx = batch_indices(run.train_pool, cfg.batch_size, k, cfg.seed)[part]
        rows = torch.from_numpy(np.searchsorted(run.train_pool, idx)).to(run.device)
        seed_global(seed_of(cfg.seed, 3, k, run.rank))
        image, tiles = pirl_views(images.to(run.device, non_blocking=True), self.views,
                                  stream(cfg.seed, 13, k, run.rank))
        with autocast(run.device, run.fast):
            f, g = net(image, tiles)
        loss, hits, f_unit = self.bank.loss(g, f, rows, self.bank.draw_negatives(k))
        self._pending.append((rows, f_unit))
        return loss, hits

    def after_step(self):
        """The bank moves after the step's gradients, as VISSL updates it after the loss (every rank's rows)."""
        for rows, f in self._pending:
            if self.run.world > 1:
                rows, f = _gathered(rows), _gathered(f)
            self.bank.update(rows, f)
        self._pending = []

    @torch.no_grad()
    def validate(self):
        """Within a batch of held-out images: does g(tiles) find its own image's f(image) by cosine (top-1, top-5),
        and the InfoNCE loss of that match at the bank's temperature."""
        run, was = self.run, self.model.training
        self.model.eval()
        n = loss = top1 = top5 = 0
        pool = np.unique(run.val_pool)  # each image once: a repeat in a batch would be its own rival
        for start in range(0, len(pool), run.cfg.batch_size):
            idx = pool[start:start + run.cfg.batch_size]
            if len(idx) < 2:
                continue
            images = run.val_source.read(idx)
            images = (images if torch.is_tensor(images) else torch.from_numpy(images)).to(run.device)
            image, tiles = pirl_views(images, self.views, stream(run.cfg.seed, 99991, start))
            with autocast(run.device, run.fast):
                f, g = self.model(image, tiles)
            sim = F.normalize(g.float(), dim=1) @ F.normalize(f.float(), dim=1).t() / self.bank.temperature
            target = torch.arange(len(idx), device=sim.device)
            loss += float(F.cross_entropy(sim, target, reduction="sum"))
            best = sim.topk(min(5, len(idx)), dim=1).indices
            top1 += int((best[:, 0] == target).sum())
            top5 += int((best == target[:, None]).any(1).sum())
            n += len(idx)
        self.model.train(was)
        return dict(loss=loss / max(n, 1), top1=top1 / max(n, 1), top5=top5 / max(n, 1))

    def state(self):
        return dict(bank=self.bank.state_dict())

    def load_state(self, state):
        self.bank.load_state_dict(state["bank"])


def _gathered(t):
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def build_model(cfg, num_permutations: int, tile: int, seed: Optional[int]):
    """The net a run trains: the CFN (`--trunk cfn`, exactly as before), or a torchvision trunk under the
    method's head."""
    if cfg.trunk == "cfn":
        return CFN(num_permutations, cfg.width, tile=tile, dropout=cfg.dropout, seed=seed, init=cfg.init)
    with torch.random.fork_rng(devices=[]):  # trunk and head drawn from the run's seed; the global stream untouched
        if seed is not None:
            seed_global(seed_of(seed, 23))
        trunk = build_trunk(cfg.trunk, cfg.width)
        return PIRLNet(trunk) if cfg.method == "pirl" else TrunkPuzzleNet(trunk, num_permutations)


def build_method(run, model):
    """The method `run.cfg.method` names (one of config.METHODS)."""
    return {"jigsaw": JigsawMethod, "pirl": PIRLMethod}[run.cfg.method](run, model)
