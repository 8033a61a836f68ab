"""Binary .caffemodel (and Caffe's HDF5 .caffemodel.h5) read and write, with blob data kept as NumPy arrays.

Blob payloads are cut straight out of the protobuf wire bytes (no per-float Python objects), so a
250 MB AlexNet file reads in about a second with about one extra copy of its size in memory.
"""
import math
import mmap
import os
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np

from . import caffe_pb2 as pb
from ..run import hdf5
from ..run.atomic import atomic_open
from ..run.decoding import decoding
from ..run.errors import CaffeError, UserError
from ..run.paths import user_file

MAX_FILE_BYTES = 1 << 31  # Caffe's own reader stops at 2 GB (protobuf's total-bytes limit)

# Field numbers: NetParameter.layer / .layers; blobs inside LayerParameter, V1LayerParameter, V0.
_NET_LAYER, _NET_LAYERS = 100, 2
_LAYER_BLOBS, _V1_BLOBS, _V1_V0, _V0_BLOBS = 7, 6, 1, 50
# LayerParameter.type; the jigsaw fork's merge_data_param number and ours (see caffe.proto).
_LAYER_TYPE, _FORK_MERGE, _OUR_MERGE = 2, 140, 90140
# BlobProto fields.
_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH, _B_DATA, _B_DIFF, _B_SHAPE, _B_DOUBLE, _B_DDIFF = range(1, 10)


class _Corrupt(Exception):
    pass


def _varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Corrupt(f"bad varint at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _next_field(buf, pos, end):
    """Decode the field starting at `pos`: (number, wire type, value start, value end)."""
    key, vs = _varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise _Corrupt(f"field number 0 at byte {pos}")
    if wire == 0:
        _, ve = _varint(buf, vs, end)
    elif wire == 1:
        ve = vs + 8
    elif wire == 2:
        length, vs = _varint(buf, vs, end)
        ve = vs + length
    elif wire == 5:
        ve = vs + 4
    else:
        raise _Corrupt(f"unsupported wire type {wire} at byte {pos}")
    if ve > end:
        raise _Corrupt(f"field {number} at byte {pos} runs past the end of its message")
    return number, wire, vs, ve


def _fields(buf, start, end):
    """Yield (number, wire type, value start, value end, field start) for each field of a message."""
    pos = start
    while pos < end:
        number, wire, vs, ve = _next_field(buf, pos, end)
        yield number, wire, vs, ve, pos
        pos = ve


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _repeated_numbers(buf, wire, vs, ve, end, dtype, tag):
    """One occurrence of a repeated float/double field as an array, and where parsing resumes.

    Packed data is a zero-copy view. Unpacked data (very old files) is a run of tag+value records
    that is sliced out in one vectorised pass rather than field by field.
    """
    width = np.dtype(dtype).itemsize
    if wire == 2:
        if (ve - vs) % width:
            raise _Corrupt(f"packed {np.dtype(dtype).name} data at byte {vs} has a partial value")
        return np.frombuffer(buf, dtype, count=(ve - vs) // width, offset=vs), ve
    stride = width + 1
    raw = np.frombuffer(buf, np.uint8, count=end - vs + 1, offset=vs - 1)
    mismatch = np.flatnonzero(raw[::stride] != tag)
    n = int(mismatch[0]) if mismatch.size else len(raw[::stride])
    if n * stride > len(raw):
        raise _Corrupt(f"unpacked value at byte {vs - 1 + (n - 1) * stride} is cut short")
    values = raw[: n * stride].reshape(n, stride)[:, 1:].copy().reshape(-1).view(dtype)
    return values, vs - 1 + n * stride


def _parse_blob(buf, start, end, path=None):
    shape, legacy, data, doubles, lazy_at = None, {}, [], [], None
    pos = start
    while pos < end:
        number, wire, vs, ve = _next_field(buf, pos, end)
        pos = ve
        if number == _B_DATA and wire in (2, 5):
            lazy_at = vs if wire == 2 else None
            arr, pos = _repeated_numbers(buf, wire, vs, ve, end, "<f4", 0x2D)
            data.append(arr)
        elif number == _B_DOUBLE and wire in (2, 1):
            arr, pos = _repeated_numbers(buf, wire, vs, ve, end, "<f8", 0x41)
            doubles.append(arr)
        elif number == _B_SHAPE and wire == 2:
            shape = []
            for n2, w2, s2, e2, _ in _fields(buf, vs, ve):
                p = s2
                while n2 == 1 and p < e2:  # packed or not, dims are varints
                    d, p = _varint(buf, p, e2)
                    shape.append(_signed(d))
        elif number in (_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH) and wire == 0:
            legacy[number] = _signed(_varint(buf, vs, ve)[0])
    values = data or doubles
    arr = np.concatenate(values) if len(values) > 1 else (values[0] if values else
                                                          np.zeros(0, np.float32))
    lazy = lazy_at if len(data) == 1 and lazy_at is not None else None
    is_legacy = shape is None and bool(legacy)
    if shape is None:  # neither shape nor legacy dims: Caffe's 0-axis blob (blob.cpp ToProto writes no shape)
        shape = [legacy.get(k, 0) for k in (_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH)] if legacy else []
    if any(d < 0 for d in shape):
        raise _Corrupt(f"blob at byte {start} has a negative dimension {tuple(shape)}")
    count = 1
    for d in shape:
        count *= d
    if arr.size != count:
        raise _Corrupt(f"blob at byte {start} declares shape {tuple(shape)} ({count} values) "
                       f"but holds {arr.size}")
    if lazy is not None:
        return Blob(None, is_legacy, shape, src=buf, offset=lazy, path=path)
    return Blob(arr.reshape(shape), is_legacy)


class Blob:
    """One parameter blob. `data` is a NumPy view of the payload (float32, or float64 for
    double_data); `copy_into` reads the payload straight from the file into a float32 array, so a
    loader never holds the file's bytes and the weights at once. `legacy`: shape came from num/
    channels/height/width."""
    __slots__ = ("shape", "legacy", "_array", "_src", "_offset", "_count", "_dtype", "_path")

    def __init__(self, array=None, legacy=False, shape=None, src=None, offset=0, dtype="<f4",
                 path=None):
        self.legacy, self._array, self._src, self._offset, self._dtype, self._path = \
            legacy, array, src, offset, np.dtype(dtype), path
        self.shape = tuple(array.shape) if array is not None else tuple(shape)
        self._count = math.prod(self.shape)

    @property
    def data(self):
        if self._array is None:
            self._array = np.frombuffer(self._src, self._dtype, self._count, self._offset).reshape(self.shape)
        return self._array

    def copy_into(self, out):
        """Fill the C-contiguous array `out` (same number of values) with this blob's values."""
        direct = (self._array is None and self._path is not None and out.dtype == np.float32 and
                  self._dtype == np.dtype("<f4") and out.flags.c_contiguous and out.size == self._count)
        if not direct:
            np.copyto(out, self.data.reshape(out.shape), casting="unsafe")
            return
        view, done = memoryview(out).cast("B"), 0
        while done < view.nbytes:  # from the file that was parsed, even if its path now names another
            n = self._path.read_at(view[done:], self._offset + done)
            if not n:
                raise CaffeError(f"{self._path.name}: file changed while reading (blob at byte "
                                 f"{self._offset} is cut short)")
            done += n


class _OpenFile:
    """The parsed .caffemodel kept open (a duplicate descriptor), so payloads are read from that file and
    not from whatever its path names later; closed when the last Blob using it goes."""

    def __init__(self, fd, name):
        self.fd, self.name = fd, name
        self.handle = os.fdopen(fd, "rb", buffering=0)

    def read_at(self, view, offset):
        if hasattr(os, "preadv"):
            return os.preadv(self.fd, [view], offset)
        self.handle.seek(offset)
        return self.handle.readinto(view)

    def __del__(self):
        try:
            self.handle.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _layer_type(buf, start, end):
    for number, wire, vs, ve, _ in _fields(buf, start, end):
        if number == _LAYER_TYPE and wire == 2:
            return bytes(buf[vs:ve])
    return None


def _field(number, wire, value):
    """One encoded field: key, length for wire type 2, the value bytes."""
    return _encode_varint((number << 3) | wire) + (_encode_varint(len(value)) if wire == 2 else b"") + value


def _renumber(buf, start, end, old, new):
    """The message bytes with every top-level field `old` renumbered `new`."""
    out = bytearray()
    for number, wire, vs, ve, fs in _fields(buf, start, end):
        out += _field(new, wire, bytes(buf[vs:ve])) if number == old else buf[fs:ve]
    return bytes(out)


def repeat_key(name: str, seen: Dict[str, int]) -> Union[str, Tuple[str, int]]:
    """The blobs key of the next layer called `name`: the name, then (name, k) for its k-th repeat
    (Caffe accepts repeated names and its ToProto writes each layer's own blobs)."""
    k = seen.get(name, 0)
    seen[name] = k + 1
    return name if k == 0 else (name, k)


def _strip_layer(buf, start, end, blob_field, nested=None, path=None):
    """Return (layer bytes without blobs, [Blob]) for one (V1/V0/current) layer message."""
    kept, blobs = bytearray(), []
    # a MergeData layer written by the jigsaw fork holds merge_data_param as field 140 (BVLC: elu_param)
    merge = blob_field == _LAYER_BLOBS and _layer_type(buf, start, end) == b"MergeData"
    for number, wire, vs, ve, fs in _fields(buf, start, end):
        if merge and number == _FORK_MERGE and wire == 2:
            kept += _field(_OUR_MERGE, 2, bytes(buf[vs:ve]))
        elif number == blob_field and wire == 2:
            blobs.append(_parse_blob(buf, vs, ve, path))
        elif nested is not None and number == nested[0] and wire == 2:
            inner, inner_blobs = _strip_layer(buf, vs, ve, nested[1], path=path)
            blobs.extend(inner_blobs)
            kept += _encode_varint((number << 3) | 2) + _encode_varint(len(inner)) + inner
        else:
            kept += buf[fs:ve]
    return bytes(kept), blobs


def _len_size(n):
    return len(_encode_varint(n))


def _encode_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def parse_caffemodel(buf: Any, path: str = "<bytes>", file: Any = None) -> Tuple["pb.NetParameter", list]:
    """Parse caffemodel bytes (or an mmap of `file`) into (NetParameter without blob data,
    [(layer name, [Blob])])."""
    net_bytes, weights = bytearray(), []
    try:
        for number, wire, vs, ve, fs in _fields(buf, 0, len(buf)):
            if number == _NET_LAYER and wire == 2:
                kept, blobs = _strip_layer(buf, vs, ve, _LAYER_BLOBS, path=file)
            elif number == _NET_LAYERS and wire == 2:
                kept, blobs = _strip_layer(buf, vs, ve, _V1_BLOBS, nested=(_V1_V0, _V0_BLOBS),
                                           path=file)
            else:
                net_bytes += buf[fs:ve]
                continue
            net_bytes += _encode_varint((number << 3) | 2) + _encode_varint(len(kept)) + kept
            weights.append((kept, number, blobs))
    except _Corrupt as e:
        raise CaffeError(f"{path}: not a valid .caffemodel ({e})") from None
    with decoding(path, "protobuf", "a valid .caffemodel", CaffeError):
        net = pb.NetParameter.FromString(bytes(net_bytes))
    named = []
    layers, v1 = iter(net.layer), iter(net.layers)
    for _, number, blobs in weights:
        layer = next(layers) if number == _NET_LAYER else next(v1)
        name = layer.name or (layer.layer.name if number == _NET_LAYERS else "")
        named.append((name, blobs))
    return net, named


def _looks_like_text(head):
    stripped = head.lstrip()
    printable = all(32 <= b < 127 or b in (9, 10, 13) for b in stripped[:256])
    return bool(stripped) and printable and (stripped[:1].isalpha() or stripped[:1] == b"#")


def read_caffemodel(path: str) -> Tuple["pb.NetParameter", List[Tuple[str, list]]]:
    """Read a .caffemodel (binary protobuf or HDF5) into (NetParameter, [(layer name, [Blob])])."""
    user_file(path, ".caffemodel")
    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise CaffeError(f"{path}: {size} bytes is over Caffe's 2 GB limit for a .caffemodel")
        with open(path, "rb") as f:
            head = f.read(512)
            if head.startswith(b"\x89HDF\r\n\x1a\n"):
                return _read_hdf5(path)
            if not head:
                raise CaffeError(f"{path}: empty file, expected a binary .caffemodel")
            if _looks_like_text(head):
                raise CaffeError(f"{path}: looks like a text prototxt, expected a binary .caffemodel")
            # Map rather than read: only tags and lengths are touched while parsing; payloads
            # are copied later straight into the parameters (Blob.copy_into).
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            opened = _OpenFile(os.dup(f.fileno()), os.path.abspath(path))
    except OSError as e:
        raise CaffeError(f"{path}: cannot read ({e.strerror or e})") from None
    return parse_caffemodel(buf, path, file=opened)


def _read_hdf5(path):
    import h5py

    named = []
    try:
        with decoding(path, "hdf5", "a Caffe .caffemodel.h5 (HDF5)", CaffeError), h5py.File(path, "r") as f:
            if "data" not in f:
                raise CaffeError(f"{path}: HDF5 file has no /data group; not a Caffe .caffemodel.h5")
            data = hdf5.group(f, "data", path)
            for name in hdf5.names(data, path):
                layer = hdf5.group(data, name, path)
                keys = hdf5.names(layer, path)
                if not all(k.isdigit() for k in keys):
                    raise CaffeError(f"{path}: layer '{name}' holds blobs named {keys[:5]}; expected 0, 1, ...")
                named.append((name, [Blob(np.asarray(hdf5.dataset(layer, k, path), dtype=np.float32))
                                     for k in sorted(keys, key=int)]))
    except CaffeError:
        raise
    except UserError as e:  # the HDF5 guards' refusals, said as the Caffe file's
        raise CaffeError(str(e)) from None
    return pb.NetParameter(), named


def _blob_bytes(array):
    arr = np.asarray(array, dtype="<f4", order="C")  # keeps a 0-axis blob 0-axis (Caffe's scalars)
    shape = pb.BlobShape(dim=list(arr.shape)).SerializeToString()
    # a 0-axis blob has no shape field at all, as Caffe writes it (blob.cpp ToProto)
    head = ((_encode_varint((_B_SHAPE << 3) | 2) + _encode_varint(len(shape)) + shape if arr.ndim else b"") +
            _encode_varint((_B_DATA << 3) | 2) + _encode_varint(arr.nbytes))
    return head, arr


def write_caffemodel(path: str, net: "pb.NetParameter", blobs: Dict[Any, Sequence[np.ndarray]]) -> None:
    """Write `net` (a NetParameter in the current format) with `blobs` {layer name: [arrays]} atomically;
    a repeated layer name's k-th repeat takes blobs[(name, k)]."""
    layer_tag = _encode_varint((_NET_LAYER << 3) | 2)
    blob_tag = _encode_varint((_LAYER_BLOBS << 3) | 2)
    header = pb.NetParameter()
    header.CopyFrom(net)
    del header.layer[:]
    del header.layers[:]
    seen = {}
    with atomic_open(path, "wb") as f:
        f.write(header.SerializeToString())
        for layer in net.layer:
            stripped = pb.LayerParameter()
            stripped.CopyFrom(layer)
            del stripped.blobs[:]
            body = stripped.SerializeToString()
            if layer.type == "MergeData":  # the fork's field number, so its Caffe reads it
                body = _renumber(body, 0, len(body), _OUR_MERGE, _FORK_MERGE)
            parts = [_blob_bytes(a) for a in blobs.get(repeat_key(layer.name, seen), ())]
            sizes = [len(h) + a.nbytes for h, a in parts]
            total = len(body) + sum(len(blob_tag) + _len_size(s) + s for s in sizes)
            f.write(layer_tag + _encode_varint(total) + body)
            for (head, arr), s in zip(parts, sizes):
                f.write(blob_tag + _encode_varint(s) + head)
                if arr.size:  # an empty blob has no payload (and no byte view)
                    f.write(memoryview(arr).cast("B"))
