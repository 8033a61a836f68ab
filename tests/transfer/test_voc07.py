"""VOC 2007: the official layout read (multi-label, difficult = 0) and VOC's AP against hand-computed values."""
import os

import numpy as np
import pytest
from PIL import Image

from tools.run.errors import UserError
from transfer.voc07 import CLASSES, average_precision, load_voc2007, mean_ap, read_split


def test_ap_by_hand():
    # ranked: + - (difficult) + - ; the difficult image counts neither way: recall .5 .5 1 1, precision
    # 1 .5 .667 .5. 11-point: recall >= 0..0.5 reach precision 1 (6 points), >= 0.6..1 reach 2/3 (5 points)
    scores, targets = [0.9, 0.8, 0.6, 0.7, 0.5], [1, -1, 0, 1, -1]
    assert average_precision(scores, targets) == pytest.approx((6 + 5 * 2 / 3) / 11)
    # the area: recall 0 -> .5 at precision 1, .5 -> 1 at the envelope's 2/3
    assert average_precision(scores, targets, eleven_point=False) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_a_difficult_image_is_ignored_not_counted_as_a_miss():
    scores = [0.9, 0.8, 0.7, 0.6]
    assert average_precision(scores, [0, 1, -1, 1]) == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert average_precision(scores, [-1, 1, -1, 1]) == pytest.approx(0.5)  # as a negative it would cost


def test_perfect_worst_ties_and_no_positive():
    assert average_precision([3, 2, 1], [1, 1, -1]) == 1.0
    assert average_precision([1, 2, 3], [1, -1, -1]) == pytest.approx((1 / 3) * 11 / 11)
    assert average_precision([1, 1], [-1, 1]) == pytest.approx(0.5)  # a tie keeps the given order
    assert np.isnan(average_precision([1, 2], [-1, 0]))
    m, aps = mean_ap(np.array([[1.0, 2.0], [0.0, 1.0]]), np.array([[1, -1], [-1, -1]]))
    assert m == 1.0 and np.isnan(aps[1])  # a class with no positive is left out of the mean


def voc_like(root, n=(6, 4), size=40):
    """A VOCdevkit/VOC2007 folder in the official layout: JPEGImages, ImageSets/Main/CLASS_SPLIT.txt."""
    base = os.path.join(root, "VOC2007")
    os.makedirs(os.path.join(base, "ImageSets", "Main"), exist_ok=True)
    os.makedirs(os.path.join(base, "JPEGImages"), exist_ok=True)
    rng = np.random.default_rng(0)
    targets = {}
    start = 1
    for split, count in zip(("trainval", "test"), n):
        ids = [f"{i:06d}" for i in range(start, start + count)]
        start += count
        t = rng.choice([1, -1, -1, 0], size=(count, len(CLASSES)))
        t[np.arange(count), np.arange(count) % len(CLASSES)] = 1  # every image shows something
        targets[split] = t
        for i in ids:
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                os.path.join(base, "JPEGImages", f"{i}.jpg"))
        for c, name in enumerate(CLASSES):
            with open(os.path.join(base, "ImageSets", "Main", f"{name}_{split}.txt"), "w") as f:
                f.writelines(f"{i} {t[k, c]:2d}\n" for k, i in enumerate(ids))
    return root, targets


def test_reads_the_official_layout_from_vocdevkit_or_voc2007(tmp_path):
    root, targets = voc_like(str(tmp_path / "VOCdevkit"))
    d = load_voc2007(root)
    assert d["train"].classes == list(CLASSES) and len(d["train"]) == 6 and len(d["test"]) == 4
    assert np.array_equal(d["train"].labels, targets["trainval"]) and d["train"].labels.dtype == np.int8
    assert d["test"].images[0].endswith(os.path.join("JPEGImages", "000007.jpg"))
    paths, t = read_split(os.path.join(root, "VOC2007"), "test")
    assert paths == d["test"].images and np.array_equal(t, targets["test"])


@pytest.mark.parametrize("line,needle", [("000001 2\n", "expected 'IMAGE_ID"), ("../x 1\n", "expected 'IMAGE_ID"),
                                         ("000099 1\n", "other images")])
def test_a_malformed_list_is_one_line_naming_the_file(tmp_path, line, needle):
    root, _ = voc_like(str(tmp_path / "VOCdevkit"))
    path = os.path.join(root, "VOC2007", "ImageSets", "Main", "dog_trainval.txt")
    with open(path) as f:
        rows = f.readlines()
    with open(path, "w") as f:
        f.writelines([line] + rows[1:])
    with pytest.raises(UserError, match=needle) as e:
        load_voc2007(root)
    assert "dog_trainval.txt" in str(e.value)


def test_not_a_voc_folder(tmp_path):
    with pytest.raises(UserError, match="not a VOC2007 folder"):
        load_voc2007(str(tmp_path))
