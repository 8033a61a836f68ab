"""CIFAR-100's python pickles (`cifar-100-python/` meta, train, test), read by a restricted unpickler that
allocates nothing a damaged file declares."""
import io
import os
import pickle

import numpy as np

from tools.run.decoding import decoding
from tools.run.errors import DatasetError
from tools.run.paths import user_file

from .dataset_files import Split, find_file


class _CifarUnpickler(pickle._Unpickler):
    """CIFAR's pickles hold dicts, lists, bytes and NumPy arrays; anything else is refused. Python's own
    unpickler, not the C one: its memo is a dict, where the C unpickler sizes an array by the largest memo index
    a file names (a damaged index asks for gigabytes); and what would allocate a size the file declares is
    refused (a bytearray, an array reconstructed non-empty)."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
    RECONSTRUCT = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def __init__(self, data: bytes, path: str):
        super().__init__(io.BytesIO(data), encoding="bytes")
        self.path = path

    def find_class(self, module, name):
        if (module, name) in self.RECONSTRUCT:
            return self._empty_array
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DatasetError(f"{self.path}: refusing to unpickle {module}.{name}")

    def _empty_array(self, cls, shape, dtype):
        """NumPy's pickles start an array empty (shape (0,)) and fill it from the bytes that follow."""
        if cls is not np.ndarray or not isinstance(shape, tuple) or shape != (0,):
            raise DatasetError(f"{self.path}: refusing an array reconstructed as {str(cls)[:40]} of shape "
                               f"{str(shape)[:40]} (NumPy's pickles start from an empty array)")
        return np.ndarray.__new__(cls, shape, dtype)

    def _bytearray(self):
        raise DatasetError(f"{self.path}: holds a bytearray (pickle protocol 5); CIFAR's pickles hold bytes")

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BYTEARRAY8[0]] = _bytearray


def _unpickle(path):
    user_file(path, "CIFAR python pickle")
    with decoding(path, "pickle", "a CIFAR python pickle", DatasetError):
        with open(path, "rb") as f:
            return _CifarUnpickler(f.read(), path).load()


def _cifar_names(path):
    meta = _unpickle(path)
    names = meta.get(b"fine_label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, bytes) for n in names):
        raise DatasetError(f"{path}: not CIFAR-100's meta dictionary (fine_label_names: a list of names)")
    return [n.decode("utf-8", "replace") for n in names]


def _cifar_split(path, n_names):
    """(images (N, 32, 32, 3) uint8, labels (N,) int64) of CIFAR-100's train or test pickle, checked."""
    d = _unpickle(path)
    data, labels = (d.get(b"data"), d.get(b"fine_labels")) if isinstance(d, dict) else (None, None)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: 'data' must be an (N, 3072) uint8 array (CIFAR's 32x32 RGB rows)")
    if not isinstance(labels, list) or not all(type(x) is int for x in labels):
        raise DatasetError(f"{path}: 'fine_labels' must be a list of integers")
    if not labels:
        raise DatasetError(f"{path}: holds no labels")
    if len(data) != len(labels) or min(labels) < 0 or max(labels) >= n_names:
        raise DatasetError(f"{path}: {len(data)} images, {len(labels)} labels in range "
                           f"{min(labels)}..{max(labels)} for {n_names} classes")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels, np.int64)


def load_cifar100(root, n_classes=None):
    base = os.path.join(root, "cifar-100-python") if os.path.isdir(os.path.join(root, "cifar-100-python")) else root
    names = _cifar_names(find_file(base, "meta"))
    out = {}
    for split in ("train", "test"):
        data, labels = _cifar_split(find_file(base, split), len(names))
        keep = labels < n_classes if n_classes else np.ones(len(labels), bool)
        out[split] = Split(np.ascontiguousarray(data[keep]), labels[keep], names[:n_classes or len(names)])
    return out
