"""What every dataset reader shares, below all of them: a split of images and labels, finding a dataset's file
(plain or .gz), and reading a bounded list file."""
import os
from dataclasses import dataclass, field

import numpy as np

from tools.run.decoding import decoding
from tools.run.errors import DatasetError
from tools.run.paths import user_file

MAX_LIST_BYTES = 1 << 26  # a list or table of image files (CUB's images.txt is 0.5 MB); anything near this is not one


@dataclass
class Split:
    """`images`: a (N, H, W) or (N, H, W, C) uint8 array, or a list of image paths; `labels`: (N,) int64."""
    images: object
    labels: np.ndarray
    classes: list = field(default_factory=list)

    def __len__(self):
        return len(self.labels)

    def subset(self, idx):
        idx = np.asarray(idx)
        images = self.images[idx] if isinstance(self.images, np.ndarray) else [self.images[i] for i in idx]
        return Split(images, self.labels[idx], self.classes)


def find_file(root, *names):
    """The first of `names` (or NAME.gz) in `root`; one DatasetError line when none is."""
    for name in names:
        for candidate in (name, name + ".gz"):
            p = os.path.join(root, candidate)
            if os.path.exists(p):
                return p
    raise DatasetError(f"{root}: none of {', '.join(names)} (or .gz) found")


def read_rows(path, what, limit=MAX_LIST_BYTES):
    """The whitespace-separated fields of each non-blank line of a UTF-8 text file of at most `limit` bytes."""
    user_file(path, what)
    with decoding(path, "text", what, DatasetError):
        if os.path.getsize(path) > limit:
            raise DatasetError(f"{path}: {os.path.getsize(path)} bytes, too large for {what}")
        with open(path, encoding="utf-8") as f:
            return [line.split() for line in f if line.strip()]
