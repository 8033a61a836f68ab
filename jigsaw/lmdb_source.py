"""Caffe LMDBs of `Datum` records (what convert_imageset writes, and the ImageNet LMDB the original
pipeline starts from) as a source for `jigsaw prepare`."""
import os

import numpy as np

from tools.caffe import caffe_pb2 as pb
from tools.run.decoding import errors_of
from tools.run.errors import UserError

from .config import MIN_SIDE
from .images import BadImage, decode
from .lmdb_pages import LmdbPages

MAX_RECORD_BYTES = 1 << 28  # a record bigger than 256 MiB is not an image Datum


def is_lmdb(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "data.mdb"))


def datum_image(value, min_side=MIN_SIDE):
    """A Datum's image: a PIL image (encoded Datum) or an (H, W, 3) uint8 RGB array (raw Datum,
    whose planes Caffe stores in OpenCV's B, G, R order). BadImage says why one is unusable."""
    try:
        d = pb.Datum.FromString(value)
    except errors_of("protobuf"):
        raise BadImage("not a Caffe Datum record") from None
    if d.encoded:
        return decode(bytes(d.data), min_side)
    c, h, w = d.channels, d.height, d.width
    if not d.data:
        raise BadImage("float_data Datum (expected uint8 pixels)" if len(d.float_data) else "empty Datum")
    if c not in (1, 3) or h <= 0 or w <= 0 or c * h * w != len(d.data):
        raise BadImage(f"Datum declares {c}x{h}x{w} but holds {len(d.data)} bytes")
    if min(h, w) < min_side:
        raise BadImage(f"tiny ({w}x{h}, shorter side < {min_side})")
    planes = np.frombuffer(d.data, np.uint8).reshape(c, h, w)
    planes = planes[::-1] if c == 3 else np.repeat(planes, 3, axis=0)
    return np.ascontiguousarray(planes.transpose(1, 2, 0))


def _looks_like_datum(value):
    try:
        d = pb.Datum.FromString(value)
    except errors_of("protobuf"):
        return False
    if d.encoded:
        return len(d.data) > 0
    return d.channels > 0 and d.height > 0 and d.width > 0 and (
        d.channels * d.height * d.width == len(d.data) or len(d.float_data) > 0)


class LmdbRecords:
    """Keys and values of a Caffe LMDB, read in key order (resumable from any position) by LmdbPages: a damaged
    LMDB is one line, never a crash of the LMDB library."""

    def __init__(self, path):
        self.path = path
        self.pages = LmdbPages(path)
        self.keys = self.pages.keys()
        if not self.keys:
            raise UserError(f"{path}: the LMDB holds no records")
        first = self.pages.value(0)
        if len(first) > MAX_RECORD_BYTES or not _looks_like_datum(first):
            raise UserError(f"{path}: not a Caffe LMDB (record {self.keys[0][:40]!r} is not a Datum "
                            "with an image)")

    def names(self):
        return [k.decode("utf-8", "replace") for k in self.keys]

    def values(self, start=0):
        """(name, value bytes) from record `start` on."""
        for index in range(start, len(self.keys)):
            yield self.keys[index].decode("utf-8", "replace"), self.pages.value(index)

    def close(self):
        self.pages.close()
