"""`jigsaw train --monitor DATASET`: every test interval, the weighted kNN accuracy of each conv layer of the
CFN branch on a small labelled set, so the features are seen improving (or not) while the pretext is learned.

The labels are read by the kNN vote only: nothing here touches the training's weights, gradients, random
streams or batches (a test trains with and without the monitor and compares the weights bit for bit).
"""
import copy
import time

import numpy as np
import torch
import torch.nn.functional as F

from jigsaw.architecture import CONVS
from jigsaw.pirl_views import normalise_rgb01
from jigsaw.tiles import branch_input
from tools.run.errors import UserError
from tools.run.runtime import numpy_rng

from .data import ImageSplit
from .datasets import load_dataset
from .features import has_batchnorm, pooled
from .knn import K, TEMPERATURE, knn_accuracy
from .lowshot import draw_labelled

TARGET_DIM = 2048  # features per layer after pooling: the kNN stays a fraction of a second per layer


class KnnMonitor:
    """Bank: `per_class` labelled images of each class drawn (seeded) from the dataset's training split;
    queries: `queries` images of its test split. Both are decoded once, at construction."""

    def __init__(self, dataset, root=None, per_class=50, queries=500, features="standardised", seed=0,
                 size=None, target_dim=TARGET_DIM, batch_size=250):
        splits = load_dataset(dataset, root, val_fraction=0.0, seed=seed)
        train, test = splits["train"], splits["test"]
        if np.ndim(train.labels) != 1:
            raise UserError(f"--monitor {dataset}: a kNN monitor needs one class per image; {dataset} is "
                            "multi-label")
        if len(np.unique(train.labels)) < 2:
            raise UserError(f"--monitor {dataset}: the training split has one class; a kNN needs two or more")
        classes = np.unique(train.labels)
        fewest = min(int((train.labels == c).sum()) for c in classes)
        if per_class > fewest:
            raise UserError(f"--monitor-labels-per-class {per_class}: a class of {dataset}'s training split has "
                            f"{fewest} images")
        self.bank_idx = draw_labelled(train.labels, per_class, 0, seed)
        rng = numpy_rng(seed, 11)
        self.query_idx = np.sort(rng.permutation(len(test))[:queries])
        self.splits = {"bank": train.subset(self.bank_idx), "queries": test.subset(self.query_idx)}
        self.name, self.features, self.target_dim, self.batch_size = dataset, features, target_dim, batch_size
        self.size = size  # None: the recipe's tile side
        self.n_classes = int(max(train.labels.max(), test.labels.max())) + 1
        self.layers, self._inputs, self.seconds = list(CONVS), {}, []

    def watch(self, model):
        """The layers measured: a CFN's convs, or a torchvision trunk's stages (`jigsaw train --trunk`)."""
        self.layers = list(getattr(model, "stage_names", CONVS))

    def describe(self):
        return (f"monitor: kNN (k {K}, T {TEMPERATURE}, {self.features} features) of "
                f"{', '.join(self.layers)} on {self.name}{f' at {self.size} px' if self.size else ''}: a bank of {len(self.splits['bank'])} labelled "
                f"training images, {len(self.splits['queries'])} test images")

    def _images(self, tile):
        """{split: ((N, 3, tile, tile) RGB 0-1 float, labels)}, decoded once per tile size."""
        if tile not in self._inputs:  # as transfer reads a split (an unreadable file: the next one, with a warning)
            self._inputs[tile] = {}
            for name, split in self.splits.items():
                ds = ImageSplit(split, tile, 3, torch.zeros(3), torch.ones(3), preprocess=lambda x: x)
                xs, ys = zip(*(ds[i] for i in range(len(ds))))
                self._inputs[tile][name] = (torch.stack(xs), np.array(ys))
        return self._inputs[tile]

    @torch.no_grad()
    def _features(self, model, x, recipe, device):
        """Each conv layer's ReLU output, average-pooled to about target_dim values: (N, D) float32 arrays."""
        grabbed = {name: [] for name in self.layers}
        cfn = not hasattr(model, "stage_names")  # a CFN's layers are hooked before their ReLU
        hooks = [(getattr(model, name) if cfn else model.trunk.stage(name)).register_forward_hook(
            lambda mod, inp, out, name=name: grabbed[name].append(
                pooled((F.relu(out) if cfn else out).float(), self.target_dim).cpu())) for name in self.layers]
        try:
            for i in range(0, len(x), self.batch_size):
                _trunk_pass(model, x[i:i + self.batch_size].to(device), recipe)
        finally:
            for h in hooks:
                h.remove()
        return {name: torch.cat(parts).numpy() for name, parts in grabbed.items()}

    def __call__(self, model, recipe, device):
        """{"knn_conv1": accuracy, ...} of `model` (a CFN) now; its train/eval mode is left as it was."""
        start, was_training = time.perf_counter(), model.training
        data = self._images(self.size or recipe.tile)
        model.eval()
        try:
            # a BatchNorm trunk is measured as the probe measures it: statistics of these images (on a copy)
            net = _fresh_batchnorm(model, data["bank"][0], recipe, device, self.batch_size) \
                if has_batchnorm(model) else model
            feats = {name: self._features(net, x, recipe, device) for name, (x, _) in data.items()}
        finally:
            model.train(was_training)
        (_, bank_y), (_, query_y) = data["bank"], data["queries"]
        out = {f"knn_{layer}": knn_accuracy(feats["bank"][layer], bank_y, feats["queries"][layer], query_y,
                                            self.n_classes, features=self.features) for layer in self.layers}
        self.seconds.append(time.perf_counter() - start)
        return out


def _trunk_pass(model, batch, recipe):
    """The trunk on (N, 3, H, W) RGB 0-1 images given as it saw its input: a CFN branch and a jigsaw trunk the
    recipe's tiles, PIRL's trunk RGB with ImageNet's statistics."""
    if not hasattr(model, "stage_names"):
        return model.trunk(branch_input(batch, recipe), "pool5")
    return model.trunk(normalise_rgb01(batch) if hasattr(model, "image_head") else branch_input(batch, recipe))


@torch.no_grad()
def _fresh_batchnorm(model, images, recipe, device, batch_size):
    """A copy of `model` whose BatchNorm statistics are those of `images` (the bank's, unlabelled use): the
    training's own statistics (tiles, crops) are not those of whole images."""
    net = copy.deepcopy(model).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    for i in range(0, len(images), batch_size):
        _trunk_pass(net, images[i:i + batch_size].to(device), recipe)
    return net.eval()


def from_config(cfg):
    """The monitor a TrainConfig asks for (`--monitor`), or None."""
    if not cfg.monitor:
        return None
    return KnnMonitor(cfg.monitor, cfg.monitor_root, cfg.monitor_labels_per_class, cfg.monitor_queries,
                      cfg.monitor_features, cfg.seed, cfg.monitor_size)
