"""`caffe-convert classify`: the top-N predictions Caffe's example classifier prints for an image and a
deploy net (its preprocessing in tools.caffe.preprocess)."""
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..run.errors import CaffeError
from ..run.paths import user_file
from .preprocess import classification_input, load_bgr, read_binaryproto


def read_labels(path: str, count: int) -> List[str]:
    """One label per line (synset_words.txt); Caffe requires one per output."""
    user_file(path, "labels file (one label per line)")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            labels = [line.rstrip("\n") for line in f]
    except OSError as e:
        raise CaffeError(f"{path}: cannot read the labels ({e.strerror or e})") from None
    if len(labels) != count:
        raise CaffeError(f"{path}: {len(labels)} labels for the net's {count} outputs")
    return labels


def top_predictions(scores: np.ndarray, n: int) -> List[int]:
    """Indices of the n largest scores, as Caffe's Argmax sorts (value, index) pairs: larger first,
    a tie going to the larger index."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i), reverse=True)
    return order[:n]


def classify(net: Any, images: Sequence[str], mean_file: Optional[str] = None, labels: Optional[str] = None,
             top: int = 5) -> List[Tuple[str, List[Tuple[float, str]]]]:
    """[(image, [(score, label)])] for each image, the net's first output for it."""
    if len(net.input_shapes) != 1:
        raise CaffeError(f"classify needs a net with one input, this one has {list(net.input_shapes)}")
    name, shape = next(iter(net.input_shapes.items()))
    if len(shape) != 4:
        raise CaffeError(f"input '{name}' has shape {shape}; classify needs (N, C, H, W)")
    _, c, h, w = shape
    mean = read_binaryproto(mean_file) if mean_file else None
    output = net.output_names[0]
    names = None
    out = []
    for path in images:
        x = classification_input(load_bgr(path), c, h, w, mean)
        batch = torch.from_numpy(np.repeat(x[None], shape[0], axis=0))  # the net's own batch size
        with torch.no_grad():
            scores = net(**{name: batch}, outputs=[output])[output][0].flatten().double().numpy()
        if names is None:
            names = read_labels(labels, len(scores)) if labels else [str(i) for i in range(len(scores))]
        out.append((path, [(float(scores[i]), names[i]) for i in top_predictions(scores, min(top, len(scores)))]))
    return out
