"""Caffe layer types as PyTorch modules; LAYERS maps a Caffe type name to its class."""
from . import common, indexing, jigsaw_fork, loss, lrn, neuron, normalization, output, recurrent, vision  # noqa: F401  (registers)
from .base import LAYERS, Layer

__all__ = ["LAYERS", "Layer"]
