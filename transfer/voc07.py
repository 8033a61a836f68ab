"""PASCAL VOC 2007 classification, the jigsaw paper's downstream benchmark: the official VOCdevkit layout
(20 classes, multi-label, 1 / -1 / 0 = difficult) and its metric, average precision per class and mAP.
"""
import os
import re

import numpy as np

from tools.run.errors import DatasetError

from .dataset_files import Split, read_rows

CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
MAX_LIST_BYTES = 1 << 24  # an image-set file of VOC07 is ~70 KB; anything near this is not one
_ID = re.compile(r"[A-Za-z0-9_]+")


def _base(root):
    """VOCdevkit/VOC2007 given either itself or the VOCdevkit folder above it."""
    for base in (root, os.path.join(root, "VOC2007")):
        if os.path.isdir(os.path.join(base, "ImageSets", "Main")) and os.path.isdir(os.path.join(base, "JPEGImages")):
            return base
    raise DatasetError(f"{root}: not a VOC2007 folder (expected ImageSets/Main/ and JPEGImages/, or VOC2007/ "
                       "holding them)")


def _lines(path):
    return read_rows(path, "a VOC image-set file ('IMAGE_ID 1|-1|0' lines)", MAX_LIST_BYTES)


def read_split(root, split):
    """(image paths, (N, 20) int8 targets in {1, -1, 0}) of 'trainval' or 'test', from the per-class lists."""
    base = _base(root)
    main = os.path.join(base, "ImageSets", "Main")
    ids = None
    columns = []
    for name in CLASSES:
        path = os.path.join(main, f"{name}_{split}.txt")
        rows = _lines(path)
        for i, row in enumerate(rows):
            if len(row) != 2 or not _ID.fullmatch(row[0]) or row[1] not in ("1", "-1", "0"):
                raise DatasetError(f"{path}, line {i + 1}: expected 'IMAGE_ID 1|-1|0', got {' '.join(row)!r}")
        these = [r[0] for r in rows]
        if ids is None:
            ids = these
        elif these != ids:
            raise DatasetError(f"{path}: lists other images than {CLASSES[0]}_{split}.txt (VOC's per-class lists "
                               "name the same images in the same order)")
        columns.append([int(r[1]) for r in rows])
    if not ids:
        raise DatasetError(f"{main}: no images in the {split} lists")
    paths = [os.path.join(base, "JPEGImages", f"{i}.jpg") for i in ids]
    return paths, np.array(columns, dtype=np.int8).T


def load_voc2007(root):
    """{"train": trainval, "test": test} Splits with (N, 20) targets."""
    return {split: Split(*read_split(root, name), list(CLASSES))
            for split, name in (("train", "trainval"), ("test", "test"))}


def average_precision(scores, targets, eleven_point=True):
    """VOC's AP of one class: images ranked by score (ties in their given order), difficult ones (target 0)
    ignored; VOC07's 11-point interpolation (the mean over recall 0, 0.1, ..., 1 of the best precision at that
    recall or more), or with eleven_point=False the area under the interpolated curve (VOC2010 on)."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets)
    keep = targets != 0
    order = np.argsort(-scores[keep], kind="stable")
    hits = targets[keep][order] > 0
    positives = int(hits.sum())
    if positives == 0:
        return float("nan")
    tp = np.cumsum(hits)
    recall, precision = tp / positives, tp / np.arange(1, len(hits) + 1)
    if eleven_point:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float((steps * envelope).sum())


def mean_ap(scores, targets, eleven_point=True):
    """(mAP, per-class APs) over the columns of (N, C) scores and targets; classes with no positive are left
    out of the mean."""
    aps = [average_precision(scores[:, c], targets[:, c], eleven_point) for c in range(targets.shape[1])]
    return float(np.nanmean(aps)), aps
