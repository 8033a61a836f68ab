"""Jigsaw-puzzle self-supervised pretraining of the Context-Free Network (Noroozi & Favaro 2016).

images -> store (store.py, `jigsaw prepare`) -> puzzles (recipes.py, tiles.py) -> CFN (architecture.py,
cfn.py) -> training (config.py, train.py) -> checkpoint (checkpoint.py) -> Caffe form (caffe_form.py).
The names below load on first use: `import jigsaw` does not import torch.
"""
from tools.run.lazy import lazy_exports

_WHERE = {"CFN": "cfn", "make_permutations": "permutations", "load_permutations": "permutations",
          "save_permutations": "permutations", "TrainConfig": "config", "train": "train",
          "read_cfn": "checkpoint"}
__all__ = sorted(_WHERE)
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
