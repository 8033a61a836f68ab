"""The CFN's layers as one table: the PyTorch module (cfn.py), its Caffe form (caffe_form.py) and the
committed prototxt files are all built from it (Noroozi & Favaro 2016, Table 1; the fork's prototxts)."""
from dataclasses import dataclass
from typing import Dict, Tuple


@dataclass(frozen=True)
class Layer:
    """One step of a branch: a convolution (kernel, stride, pad, group), a max pooling (kernel,
    stride; Caffe rounds its output up) or a cross-channel LRN (size, alpha, beta, k)."""
    name: str
    kind: str  # "conv", "pool" or "lrn"
    kernel: int = 0
    stride: int = 1
    pad: int = 0
    group: int = 1
    lrn: Tuple[int, float, float, float] = (5, 1e-4, 0.75, 1.0)


BRANCH = (
    Layer("conv1", "conv", 11, 2, 0, 1), Layer("pool1", "pool", 3, 2), Layer("norm1", "lrn"),
    Layer("conv2", "conv", 5, 1, 2, 2), Layer("pool2", "pool", 3, 2), Layer("norm2", "lrn"),
    Layer("conv3", "conv", 3, 1, 1, 1), Layer("conv4", "conv", 3, 1, 1, 2),
    Layer("conv5", "conv", 3, 1, 1, 2), Layer("pool5", "pool", 3, 2),
)
CONVS = tuple(layer.name for layer in BRANCH if layer.kind == "conv")
WEIGHTED = (*CONVS, "fc6", "fc7", "fc8")  # every layer with a weight and a bias, in order
SHARED = (*CONVS, "fc6")                  # one copy serves all nine branches
DROPOUT = 0.5                             # after fc6 and fc7

BASE_WIDTHS = dict(conv1=96, conv2=256, conv3=384, conv4=384, conv5=256, fc6=1024, fc7=4096)
# Caffe's fillers: gaussian weight std and constant bias, per layer (the fork's train_val files)
FILLERS: Dict[str, Tuple[float, float]] = {
    "conv1": (0.01, 0), "conv2": (0.01, 1), "conv3": (0.01, 0), "conv4": (0.01, 1), "conv5": (0.01, 1),
    "fc6": (0.005, 1), "fc7": (0.005, 1), "fc8": (0.01, 0)}
# Caffe's multipliers: weights lr 1 / decay 1, biases lr 2 / decay 0
PARAM_MULTS = ((1.0, 1.0), (2.0, 0.0))


def widths_for(width: float = 1.0) -> Dict[str, int]:
    """Layer widths scaled by a multiplier (even, so group-2 convolutions stay valid)."""
    return {k: max(2, 2 * round(v * width / 2)) for k, v in BASE_WIDTHS.items()}


def pool5_side(tile: int) -> int:
    """Side of pool5 for a `tile` px tile, pooling rounded up as Caffe's is (64 px: 3)."""
    side = tile
    for layer in BRANCH:
        if layer.kind == "conv":
            side = (side + 2 * layer.pad - layer.kernel) // layer.stride + 1
        elif layer.kind == "pool":
            side = -(-(side - layer.kernel) // layer.stride) + 1
    return side
