"""Every loader on a small fixture written in the real on-disk format, plus malformed variants."""
import gzip
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from transfer.datasets import DatasetError, load_dataset, read_idx


def write_idx(path, array, gz=True):
    head = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    data = head + np.ascontiguousarray(array, np.uint8).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


def mnist_like(root, prefix="", stems=("train", "t10k"), n=(30, 10), gz=True, label_offset=0):
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, count in zip(stems, n):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        images[:, 0, 5] = 255  # a marker above the diagonal, to see transposition
        ext = ".gz" if gz else ""
        write_idx(os.path.join(root, f"{prefix}{stem}-images-idx3-ubyte{ext}"), images, gz)
        write_idx(os.path.join(root, f"{prefix}{stem}-labels-idx1-ubyte{ext}"),
                  (np.arange(count) % 10 + label_offset).astype(np.uint8), gz)
    return root


def test_fashion_mnist_idx_and_validation_from_train_only(tmp_path):
    root = mnist_like(str(tmp_path / "fm"))
    d = load_dataset("fashion-mnist", root, val_fraction=0.2, seed=1)
    assert len(d["train"]) == 24 and len(d["val"]) == 6 and len(d["test"]) == 10
    assert d["train"].images.shape[1:] == (28, 28) and d["train"].classes[0] == "T-shirt/top"
    again = load_dataset("fashion-mnist", root, val_fraction=0.2, seed=1)
    assert np.array_equal(again["val"].labels, d["val"].labels)


def test_raw_idx_and_mnist(tmp_path):
    root = mnist_like(str(tmp_path / "m"), gz=False)
    assert len(load_dataset("mnist", root)["test"]) == 10


def test_emnist_is_turned_upright_and_relabelled(tmp_path):
    root = mnist_like(str(tmp_path / "e"), prefix="emnist-letters-", stems=("train", "test"), label_offset=1)
    d = load_dataset("emnist-letters", root, val_fraction=0)
    assert d["test"].images[0, 5, 0] == 255 and d["train"].labels.min() == 0 and d["train"].classes[0] == "a"


@pytest.mark.parametrize("damage,expect", [
    (lambda b: b[:40], "declares"), (lambda b: b"\x01\x02" + b[2:], "not an idx file"),
])
def test_malformed_idx(tmp_path, damage, expect):
    path = tmp_path / "x-idx3-ubyte"
    write_idx(str(path), np.zeros((4, 5, 5), np.uint8), gz=False)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetError, match=expect):
        read_idx(str(path))


def test_missing_dataset_folder_is_clear():
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset("mnist", "/nonexistent/mnist")


def cifar_fixture(root):
    base = os.path.join(root, "cifar-100-python")
    os.makedirs(base)
    rng = np.random.default_rng(0)
    names = [f"class{i:02d}".encode() for i in range(100)]
    with open(os.path.join(base, "meta"), "wb") as f:
        pickle.dump({b"fine_label_names": names, b"coarse_label_names": []}, f)
    for split, n in (("train", 60), ("test", 20)):
        with open(os.path.join(base, split), "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": [int(x) for x in np.arange(n) % 40]}, f)
    return base


def test_cifar100_and_the_25_class_subset(tmp_path):
    cifar_fixture(str(tmp_path))
    d = load_dataset("cifar100", str(tmp_path), val_fraction=0.1)
    assert d["train"].images.shape[1:] == (32, 32, 3) and len(d["test"]) == 20
    sub = load_dataset("cifar100-25", str(tmp_path), val_fraction=0)
    assert sub["train"].labels.max() < 25 and len(sub["train"].classes) == 25


def test_cifar_pickle_carrying_code_is_refused(tmp_path):
    base = cifar_fixture(str(tmp_path))
    with open(os.path.join(base, "train"), "wb") as f:
        pickle.dump({b"data": os.system}, f)  # a global outside the allowed list
    with pytest.raises(DatasetError, match="refusing to unpickle"):
        load_dataset("cifar100", str(tmp_path))


def _image(path, color=(120, 30, 200), size=(40, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)


def cub_fixture(root, bad_label=False, missing=False):
    base = os.path.join(root, "CUB_200_2011")
    rows, labels, split = [], [], []
    for i in range(1, 9):
        cls = 1 + i % 2
        rel = f"{cls:03d}.Bird_{cls}/img_{i}.jpg"
        if not (missing and i == 3):
            _image(os.path.join(base, "images", rel))
        rows.append(f"{i} {rel}")
        labels.append(f"{i} {99 if bad_label and i == 2 else cls}")
        split.append(f"{i} {int(i <= 6)}")
    for name, lines in (("images.txt", rows), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("classes.txt", ["1 001.Bird_1", "2 002.Bird_2"])):
        with open(os.path.join(base, name), "w") as f:
            f.write("\n".join(lines) + "\n")
    return base


def test_cub200_official_lists(tmp_path):
    cub_fixture(str(tmp_path))
    d = load_dataset("cub200", str(tmp_path), val_fraction=0.34)
    assert len(d["test"]) == 2 and len(d["train"]) + len(d["val"]) == 6
    assert d["train"].classes == ["001.Bird_1", "002.Bird_2"]


@pytest.mark.parametrize("kind,expect", [("bad_label", "not in 1..2"), ("missing", "does not exist")])
def test_cub200_malformed(tmp_path, kind, expect):
    cub_fixture(str(tmp_path), **{kind: True})
    with pytest.raises(DatasetError, match=expect):
        load_dataset("cub200", str(tmp_path))


def test_fruits360_keeps_one_in_k_and_first_classes(tmp_path):
    for split in ("Training", "Test"):
        for c in ("Apple", "Banana", "Cherry"):
            for i in range(8):
                _image(str(tmp_path / split / c / f"{i}_100.jpg"))
    d = load_dataset("fruits360", str(tmp_path), val_fraction=0, keep_every=4, max_classes=2)
    assert d["train"].classes == ["Apple", "Banana"] and len(d["train"]) == 4 and len(d["test"]) == 4


def test_kaggle_cats_vs_dogs_flat_layout(tmp_path):
    for i in range(6):
        _image(str(tmp_path / "train" / f"cat.{i}.jpg"))
        _image(str(tmp_path / "train" / f"dog.{i}.jpg"))
    d = load_dataset("cats-vs-dogs", str(tmp_path), val_fraction=0)
    assert d["train"].classes == ["cat", "dog"] and len(d["train"]) + len(d["test"]) == 12


def test_kaggle_blood_cells_layout(tmp_path):
    for split in ("TRAIN", "TEST"):
        for c in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"):
            for i in range(3):
                _image(str(tmp_path / "dataset2-master" / "images" / split / c / f"_{i}.jpeg"))
    d = load_dataset("blood-cells", str(tmp_path), val_fraction=0)
    assert d["train"].classes[0] == "EOSINOPHIL" and len(d["test"]) == 12


def test_cub200_train_test_list_variant(tmp_path):
    base = tmp_path / "cub"
    for i, cls in enumerate((1, 2, 1, 2, 1)):
        _image(str(base / "images" / f"{cls:03d}.Bird/{i}.jpg"))
    (base / "train.txt").write_text("001.Bird/0.jpg 0\n002.Bird/1.jpg 1\n001.Bird/2.jpg 0\n")
    (base / "test.txt").write_text("002.Bird/3.jpg 1\n001.Bird/4.jpg 0\n")
    d = load_dataset("cub200", str(base), val_fraction=0)
    assert len(d["train"]) == 3 and d["test"].labels.tolist() == [1, 0]


def test_generic_folder_without_test_split_cuts_one(tmp_path):
    for c in ("a", "b"):
        for i in range(10):
            _image(str(tmp_path / c / f"{i}.png"))
    d = load_dataset("folder", str(tmp_path), val_fraction=0.2, seed=3)
    assert len(d["test"]) == 3 and len(d["train"]) + len(d["val"]) == 17
    train_paths = set(d["train"].images) | set(d["val"].images)
    assert not train_paths & set(d["test"].images)


def test_cifar_label_out_of_range(tmp_path):
    base = cifar_fixture(str(tmp_path))
    with open(os.path.join(base, "test"), "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [1, 100]}, f)
    with pytest.raises(DatasetError, match="for 100 classes"):
        load_dataset("cifar100", str(tmp_path))


def test_unreadable_images_in_a_folder_are_skipped_and_reported(tmp_path):
    import warnings
    import torch
    from transfer.data import ImageSplit
    for c in ("cat", "dog"):
        for i in range(3):
            _image(str(tmp_path / c / f"{i}.jpg"))
    (tmp_path / "dog" / "1.jpg").write_bytes(b"\xff\xd8 truncated")  # Kaggle PetImages has such files
    d = load_dataset("folder", str(tmp_path), val_fraction=0)
    split = d["train"] if any("dog/1.jpg" in p for p in d["train"].images) else d["test"]
    ds = ImageSplit(split, 32, 3, torch.zeros(3), torch.ones(3))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        items = [ds[i] for i in range(len(ds))]
    assert len(items) == len(split) and any("dog/1.jpg" in str(x.message) for x in w)


def test_limits_for_each_split_say_what_they_limit(tmp_path, capsys):
    """--limit-train limited training only and did not say so; --limit-val and --limit-test do the same for the
    other splits, each on its own split (the validation split is cut before any limit)."""
    from transfer.cli import build_parser
    from transfer.datasets import load_dataset
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    full = load_dataset("fashion-mnist", root, 0.25)
    cut = load_dataset("fashion-mnist", root, 0.25, limit_train=10, limit_val=5, limit_test=7)
    assert [len(cut[s]) for s in ("train", "val", "test")] == [10, 5, 7]
    assert [len(full[s]) for s in ("train", "val", "test")] == [45, 15, 20]
    assert list(cut["val"].labels) == list(full["val"].labels[:5])  # the same validation images, fewer
    for command in ("finetune", "probe"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--limit-val" in text and "--limit-test" in text
        assert "train on N images only" in text and "validation and test keep theirs" in text
