"""Labelled datasets in their official on-disk formats, as uint8 arrays or file lists with labels.

fashion-mnist, mnist, emnist-letters (idx files, .gz or raw; EMNIST is stored transposed and is turned
upright), cifar100 and cifar100-25 (the `cifar-100-python` pickles: cifar.py),
cub200 (official lists, or a train.txt/test.txt variant), fruits360 (`Training/`, `Test/`),
cats-vs-dogs and blood-cells (class folders, including the Kaggle layouts) and any image folder.
"""
import gzip
import math
import os
from typing import Optional

import numpy as np

from tools.run.images import EXTENSIONS as IMAGE_EXT
from tools.run.errors import DatasetError, UserError, unknown  # noqa: F401 (DatasetError: transfer's name for it too)
from tools.run.decoding import decoding
from tools.run.paths import inside, is_regular
from tools.run.runtime import numpy_rng
from .cifar import load_cifar100
from .dataset_files import Split, find_file, read_rows  # noqa: F401 (Split: the name the readers' users know)
from .downloads import FASHION_MNIST_DEBIAN, HOW_TO_GET, found_folder  # noqa: F401 (the Debian path: others' name too)
from .voc07 import load_voc2007

MAX_IDX_BYTES = 1 << 31


def _read_upto(f, n, chunk=1 << 24):
    """At most n bytes of f, in chunks: memory follows the bytes present, never a header's claim."""
    parts, left = [], n
    while left > 0:
        part = f.read(min(left, chunk))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_idx(path):
    """An idx file (MNIST family, .gz or raw) as a uint8 array. The header's sizes are multiplied as Python
    integers (no wrap-around) and checked against MAX_IDX_BYTES, and the data is read only as far as it goes."""
    opener = gzip.open if path.endswith(".gz") else open
    with decoding(path, "gzip", "an idx file" + (" compressed with gzip" if path.endswith(".gz") else ""),
                  DatasetError):
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] or head[1] or head[2] != 0x08:
                raise DatasetError(f"{path}: not an idx file of unsigned bytes (magic {head.hex()})")
            raw_dims = f.read(4 * head[3])
            dims = [int.from_bytes(raw_dims[4 * k:4 * k + 4], "big") for k in range(len(raw_dims) // 4)]
            if not head[3] or len(raw_dims) != 4 * head[3] or math.prod(dims) > MAX_IDX_BYTES:
                raise DatasetError(f"{path}: bad idx header (dims {dims}, at most {MAX_IDX_BYTES} bytes)")
            data = _read_upto(f, math.prod(dims) + 1)
    if len(data) != math.prod(dims):
        raise DatasetError(f"{path}: idx header declares {math.prod(dims)} bytes, file holds {len(data)}")
    return np.frombuffer(data, np.uint8).reshape(dims)


def load_idx_dataset(root, kind="fashion-mnist"):
    if not root and kind == "fashion-mnist":  # $JIGSAW_FASHION_MNIST, Debian's package or an earlier download
        root = (found_folder() or (None, ""))[0]
        if not root:
            raise DatasetError(f"Fashion-MNIST: not on this machine and no --data-root given; {HOW_TO_GET}")
    if not root or not os.path.isdir(root):
        raise DatasetError(f"{root}: no such folder for {kind}")
    prefix = "emnist-letters-" if kind == "emnist-letters" else ""
    out = {}
    for split, stem in (("train", "train"), ("test", "t10k" if not prefix else "test")):
        images = read_idx(find_file(root, f"{prefix}{stem}-images-idx3-ubyte", f"{prefix}{stem}-images.idx3-ubyte"))
        labels = read_idx(find_file(root, f"{prefix}{stem}-labels-idx1-ubyte", f"{prefix}{stem}-labels.idx1-ubyte"))
        if len(images) != len(labels):
            raise DatasetError(f"{root}: {split} has {len(images)} images but {len(labels)} labels")
        if not len(images):
            raise DatasetError(f"{root}: the {split} idx files hold no images")
        if kind == "emnist-letters":
            images = images.transpose(0, 2, 1)  # EMNIST stores images transposed
            labels = labels.astype(np.int64) - 1  # letters are labelled 1..26
        out[split] = Split(np.ascontiguousarray(images), labels.astype(np.int64))
    n = int(max(out["train"].labels.max(), out["test"].labels.max())) + 1
    names = {"fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                               "Sneaker", "Bag", "Ankle boot"],
             "emnist-letters": [chr(ord("a") + i) for i in range(26)]}.get(kind, [str(i) for i in range(n)])
    for s in out.values():
        if s.labels.min() < 0 or s.labels.max() >= len(names):
            raise DatasetError(f"{root}: labels outside 0..{len(names) - 1}")
        s.classes = names
    return out


def _class_folder(root, keep_every=1, max_classes=None):
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such folder")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if max_classes:
        classes = classes[:max_classes]
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(root, c))
                       if f.lower().endswith(IMAGE_EXT) and is_regular(os.path.join(root, c, f)))
        for f in files[::keep_every]:
            paths.append(os.path.join(root, c, f))
            labels.append(i)
    if not paths:
        raise DatasetError(f"{root}: no images in class folders")
    return Split(paths, np.asarray(labels, np.int64), classes)


def _named_sub(root, *names):
    for entry in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if entry.lower() in names and os.path.isdir(os.path.join(root, entry)):
            return os.path.join(root, entry)
    return None


def _kaggle_flat(folder):
    """Kaggle's cats-vs-dogs `train/cat.0.jpg`: the class is the file name's prefix."""
    files = sorted(f for f in os.listdir(folder)
                   if f.lower().endswith(IMAGE_EXT) and "." in f and is_regular(os.path.join(folder, f)))
    classes = sorted({f.split(".")[0].lower() for f in files})
    if not files or len(classes) < 2:
        return None
    return Split([os.path.join(folder, f) for f in files],
                 np.asarray([classes.index(f.split(".")[0].lower()) for f in files], np.int64), classes)


def load_folder_dataset(root, keep_every=1, max_classes=None):
    """train/test class folders (any case: Training/Test, TRAIN/TEST, train/test), Kaggle layouts, or a
    single class-folder tree (then `test` is None and a test split is cut by the caller)."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such folder")
    for nested in ("dataset2-master/images", "petimages"):  # Kaggle blood cells, Microsoft PetImages
        sub = os.path.join(root, nested) if "/" in nested else _named_sub(root, nested)
        if sub and os.path.isdir(sub):
            root = sub
    train = _named_sub(root, "training", "train")
    test = _named_sub(root, "test", "testing")
    if train:
        flat = _kaggle_flat(train)
        tr = flat or _class_folder(train, keep_every, max_classes)
        te = _class_folder(test, keep_every, max_classes) if test else None
        if te is not None and te.classes != tr.classes:
            te.labels = np.asarray([tr.classes.index(te.classes[l]) if te.classes[l] in tr.classes else -1
                                    for l in te.labels], np.int64)
            keep = te.labels >= 0
            te = Split([p for p, k in zip(te.images, keep) if k], te.labels[keep], tr.classes)
        return {"train": tr, "test": te}
    return {"train": _class_folder(root, keep_every, max_classes), "test": None}


MAX_CLASSES = 100_000


def _label(text, path, line, low=0):
    """A class number of a list file, low..MAX_CLASSES - 1 + low, or one line naming the file and line."""
    if not text.isdigit() or not low <= int(text) < MAX_CLASSES + low:
        raise DatasetError(f"{path}, line {line}: the label {text[:20]!r} is not a class number "
                           f"{low}..{MAX_CLASSES - 1 + low}")
    return int(text)


def load_cub200(root):
    base = os.path.join(root, "CUB_200_2011") if os.path.isdir(os.path.join(root, "CUB_200_2011")) else root

    def table(name):
        path = os.path.join(base, name)
        if not os.path.exists(path):
            raise DatasetError(f"{path}: missing (CUB-200-2011 needs images.txt, image_class_labels.txt, "
                               "train_test_split.txt, classes.txt)")
        rows = read_rows(path, "a CUB-200-2011 table (ID VALUE lines)")
        if any(len(r) < 2 for r in rows):
            raise DatasetError(f"{path}: every line needs an id and a value")
        return {r[0]: r[1] for r in rows}

    if os.path.exists(os.path.join(base, "train.txt")) and not os.path.exists(os.path.join(base, "images.txt")):
        return _cub_lists(base)
    images, labels = table("images.txt"), table("image_class_labels.txt")
    split, classes = table("train_test_split.txt"), table("classes.txt")
    if not images or not classes:
        raise DatasetError(f"{base}: images.txt and classes.txt must list at least one entry")
    try:
        names = [classes[k] for k in sorted(classes, key=int)]
        numbers = {i: int(v) for i, v in labels.items()}
    except ValueError as e:
        raise DatasetError(f"{base}: class ids and labels must be integers ({e})") from None
    out = {"train": ([], []), "test": ([], [])}
    for i, rel in images.items():
        if i not in labels or i not in split:
            raise DatasetError(f"{base}: image id {i} has no label or split entry")
        label = numbers[i] - 1
        if not 0 <= label < len(names):
            raise DatasetError(f"{base}/image_class_labels.txt: label {labels[i]} for image {i} is not in 1..{len(names)}")
        path = inside(os.path.join(base, "images"), rel, os.path.join(base, "images.txt"))
        out["train" if split[i] == "1" else "test"][0].append(path)
        out["train" if split[i] == "1" else "test"][1].append(label)
    return {k: Split(p, np.asarray(l, np.int64), names) for k, (p, l) in out.items()}


def _cub_lists(base):
    """The train.txt / test.txt variant: 'CLASS_FOLDER/IMAGE [LABEL]' lines; without LABEL the folder's number."""
    out = {}
    for split in ("train", "test"):
        path = os.path.join(base, f"{split}.txt")
        if not os.path.exists(path):
            raise DatasetError(f"{path}: missing (the list variant of CUB-200 needs train.txt and test.txt)")
        paths, labels = [], []
        for line, parts in enumerate(read_rows(path, "a CUB-200 image list ('PATH [LABEL]' lines)"), 1):
            rel = parts[0]
            label = _label(parts[1], path, line) if len(parts) > 1 else \
                _label(rel.split("/")[0].split(".")[0], path, line, low=1) - 1
            paths.append(inside(os.path.join(base, "images"), rel, path))
            labels.append(label)
        if not paths:
            raise DatasetError(f"{path}: lists no images")
        out[split] = Split(paths, np.asarray(labels, np.int64))
    names = [str(i) for i in range(int(max(out["train"].labels.max(), out["test"].labels.max())) + 1)]
    for s in out.values():
        s.classes = names
    return out


def check_files(split, where):
    """Every listed image file must exist: one clear error naming the first missing one."""
    if isinstance(split.images, list):
        for p in split.images:
            if not os.path.exists(p):
                raise DatasetError(f"{where}: listed image {p} does not exist")


# what each dataset's --data-root holds (the official downloads, unpacked)
EXPECTED = {
    "fashion-mnist": "the four idx files, e.g. train-images-idx3-ubyte.gz",
    "mnist": "the four idx files, e.g. train-images-idx3-ubyte.gz",
    "emnist-letters": "the four emnist-letters idx files",
    "cifar100": "cifar-100-python/ with train, test and meta",
    "cifar100-25": "cifar-100-python/ with train, test and meta",
    "fruits360": "Training/ and Test/ class folders",
    "cub200": "CUB_200_2011/ with images.txt, image_class_labels.txt, train_test_split.txt, images/",
    "cats-vs-dogs": "train/ with cat.N.jpg and dog.N.jpg (Kaggle) or train/test class folders",
    "blood-cells": "TRAIN/ and TEST/ class folders (dataset2-master/images)",
    "folder": "train/ and test/ class folders, or class folders alone",
    "voc2007": "VOCdevkit/ (or its VOC2007/) with JPEGImages/ and ImageSets/Main/CLASS_trainval.txt and "
               "CLASS_test.txt (the trainval and test downloads unpacked into one folder); multi-label",
}

DATASETS = {
    "fashion-mnist": lambda root, **kw: load_idx_dataset(root, "fashion-mnist"),
    "mnist": lambda root, **kw: load_idx_dataset(root, "mnist"),
    "emnist-letters": lambda root, **kw: load_idx_dataset(root, "emnist-letters"),
    "cifar100": lambda root, **kw: load_cifar100(root),
    "cifar100-25": lambda root, **kw: load_cifar100(root, 25),
    "fruits360": lambda root, keep_every=4, max_classes=81, **kw: load_folder_dataset(root, keep_every, max_classes),
    "cub200": lambda root, **kw: load_cub200(root),
    "cats-vs-dogs": lambda root, **kw: load_folder_dataset(root),
    "blood-cells": lambda root, **kw: load_folder_dataset(root),
    "folder": lambda root, **kw: load_folder_dataset(root),
    "voc2007": lambda root, **kw: load_voc2007(root),
}


def _check_sizes(name, root, train, test):
    """What no protocol can run on, said before anything is trained: an empty split, or one class only."""
    for split, label in ((train, "training"), (test, "test")):
        if not len(split):
            raise DatasetError(f"{name} at {root}: the {label} split holds no images")
    labels = np.asarray(train.labels)
    if labels.ndim == 1 and len(np.unique(labels)) < 2:
        only = train.classes[int(labels[0])]
        raise DatasetError(f"{name} at {root}: the training split has one class only ({only!r}); a classifier "
                           "needs two or more")


def load_dataset(name: str, root: Optional[str], val_fraction: float = 0.15, seed: int = 0,
                 limit_train: Optional[int] = None, limit_test: Optional[int] = None, limit_val: Optional[int] = None,
                 **kw) -> dict:
    """{"train", "val", "test"} Splits: `val` is a seeded shuffle of the training split (never the test
    set); with no test split on disk, one is cut the same way first. `limit_train` keeps the first N training
    images (after the shuffle), `limit_val` the first N of the validation split (seeded too), `limit_test` a
    seeded sample of N test images."""
    if name not in DATASETS:
        raise unknown("dataset", name, DATASETS, cls=DatasetError)
    if root is None and name != "fashion-mnist":  # only Fashion-MNIST has a default place (Debian's package)
        raise DatasetError(f"{name}: --data-root is required ({EXPECTED[name]}; `transfer list` shows the layouts)")
    parts = DATASETS[name](root, **kw)
    rng = numpy_rng(seed)
    train, test = parts["train"], parts.get("test")
    if test is None:
        order = rng.permutation(len(train))
        n_test = max(1, int(round(0.15 * len(train))))
        test, train = train.subset(np.sort(order[:n_test])), train.subset(np.sort(order[n_test:]))
    for s, label in ((train, "train"), (test, "test")):
        check_files(s, f"{root} ({label})")
    _check_sizes(name, root, train, test)
    order = rng.permutation(len(train))
    n_val = int(round(val_fraction * len(train)))
    if val_fraction > 0 and (n_val == 0 or n_val == len(train)):
        raise DatasetError(f"{name} at {root}: {len(train)} training image(s) cannot give both a validation split "
                           f"of {val_fraction:g} and images to train on")
    val, train = train.subset(order[:n_val]), train.subset(order[n_val:])
    if limit_train:
        train = train.subset(np.arange(min(limit_train, len(train))))
    if limit_val:
        val = val.subset(np.arange(min(limit_val, len(val))))
    if limit_test and limit_test < len(test):  # a seeded sample: a test split on disk may be sorted by class
        test = test.subset(np.sort(numpy_rng(seed, 5).permutation(len(test))[:limit_test]))
    return {"train": train, "val": val, "test": test}
