"""Torch datasets over Splits: per-channel statistics of the training split, resizing to the backbone's
input, grayscale to 3 channels, and the seeds' augmentations as options."""
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tools.run.errors import UserError
from tools.run.images import read_image
from tools.run.runtime import generator, import_torchvision, numpy_rng

from .datasets import DatasetError


def _load(item, channels, size=None):
    """An image as a (C, H, W) uint8 tensor. A file is decoded no larger than needed (JPEG draft mode at
    `size`); one of more than MAX_PIXELS pixels, or that is not a regular file, is one line."""
    if isinstance(item, np.ndarray):
        arr = item
    else:
        try:
            arr = read_image(item, "RGB" if channels == 3 else "L", size)
        except UserError as e:  # a dataset's file: the loader may skip it
            raise DatasetError(str(e)) from None
    t = torch.from_numpy(np.array(arr))  # a writable copy (idx arrays are read-only views)
    t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
    return t


def channel_stats(split, size, channels, limit=5000, seed=0, progress=False):
    """Per-channel mean and std of the (resized) training images on a 0-1 scale."""
    idx = numpy_rng(seed).permutation(len(split))[:limit]
    total, sq, n = torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64), 0
    for i in tqdm(idx, desc="input statistics", leave=False, disable=not progress):
        x = _prepare(_load(split.images[i], channels, size), size, channels).double()
        total += x.sum(dim=(1, 2))
        sq += (x * x).sum(dim=(1, 2))
        n += x[0].numel()
    mean = total / n
    std = (sq / n - mean * mean).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


def _prepare(t, size, channels):
    if t.shape[0] == 1 and channels == 3:
        t = t.expand(3, -1, -1)  # grayscale sets feed 3-channel backbones by repetition
    elif t.shape[0] == 3 and channels == 1:
        t = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2])[None]
    x = t.float() / 255.0
    if tuple(x.shape[1:]) != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)[0]
    return x


class ImageSplit(Dataset):
    """Images of a split, resized, augmented, then given to the model: through `preprocess` (the
    backbone's own transform of 0-1 RGB, e.g. a CFN's recipe) or standardised by `mean`/`std`."""

    def __init__(self, split, size, channels, mean, std, augment=None, preprocess=None):
        self.split, self.size, self.channels = split, size, channels
        self.mean, self.std, self.augment = mean[:, None, None], std[:, None, None], augment
        self.preprocess = preprocess

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        for k in range(len(self.split)):  # an unreadable file is reported and the next one used
            j = (i + k) % len(self.split)
            try:
                x = _prepare(_load(self.split.images[j], self.channels, self.size), self.size, self.channels)
                break
            except DatasetError as e:
                warnings.warn(f"skipped: {e}", stacklevel=2)
        else:
            raise DatasetError("no readable image in this split")
        i = j
        if self.augment is not None:
            x = self.augment(x)
        x = self.preprocess(x) if self.preprocess is not None else (x - self.mean) / self.std
        label = self.split.labels[i]  # a class, or a row of multi-label targets (VOC: 1 / -1 / 0 difficult)
        return x, int(label) if np.ndim(label) == 0 else torch.from_numpy(np.array(label))


def augmentation(rotation=0.0, hflip=False, shift=0.0, shear=0.0, zoom=0.0):
    """The seeds' augmentations (Keras ImageDataGenerator-style) as a torchvision transform, or None."""
    if not any((rotation, hflip, shift, shear, zoom)):
        return None
    import_torchvision()  # one line when it does not load
    from torchvision.transforms import v2
    ops = [v2.RandomAffine(degrees=rotation, translate=(shift, shift) if shift else None,
                           scale=(1 - zoom, 1 + zoom) if zoom else None, shear=shear or None)]
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops)


def loaders(splits, size, channels, batch_size, *, workers=0, augment=None, seed=0, stats=None, preprocess=None,
            progress=False):
    """DataLoaders for train (shuffled, seeded), val and test: through `preprocess` when given, else
    normalised by training-split statistics (computed either way, and recorded)."""
    mean, std = stats if stats is not None else channel_stats(splits["train"], size, channels, seed=seed,
                                                              progress=progress)
    g = generator(seed)
    out = {}
    for name in ("train", "val", "test"):
        ds = ImageSplit(splits[name], size, channels, mean, std, augment if name == "train" else None,
                        preprocess)
        out[name] = DataLoader(ds, batch_size=batch_size, shuffle=name == "train", generator=g,
                               num_workers=workers, drop_last=False)
    return out, (mean, std)
