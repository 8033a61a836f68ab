"""The prepared image store: `prepare` decodes a folder once into chunked HDF5; `ImageStore` reads
shuffled batches from it at memory speed; `FolderImages` reads a raw folder (the slower path)."""
import contextlib
import hashlib
import itertools
import math
import os
import re
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import List, Optional, Tuple

import h5py
import numpy as np
from tqdm import tqdm

from tools.run import hdf5
from tools.run.decoding import decoding
from tools.run.errors import UserError
from tools.run.folder import RunFolder
from tools.run.paths import user_file
from tools.run.runtime import die_with_parent

from .config import MIN_SIDE
from .images import BadImage, list_images, load_image, to_layout
from .layouts import JPS_CROP, LAYOUTS, stored_side
from .lmdb_source import LmdbRecords, datum_image, is_lmdb

FLUSH_EVERY = 64
MAX_STORE_SIDE = 4096  # a store image larger than this is not what prepare writes: refused before reading


def _decode(job):
    """(name, array or None, reason) for a file path or an LMDB Datum's bytes."""
    name, source, size, layout, min_side = job
    try:
        if isinstance(source, bytes):
            return name, to_layout(datum_image(source, min_side), layout, size), None
        return name, load_image(source, size, min_side, layout=layout), None
    except BadImage as e:
        return name, None, str(e)


def _init_worker():
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and keeps progress
    # a forked child must not enter the parent's OpenMP pool (it hangs); one thread runs inline
    import torch
    torch.set_num_threads(1)


class StoreWrites:
    """What a prepare's writes leave for its caller. After a failed write (a full disk, a file-size limit),
    `failed` is the error and `objects` keeps the store's HDF5 objects referenced: closing them, even by garbage
    collection, crashes HDF5 (SIGSEGV in its exit handler), so a command line leaves by os._exit instead
    (jigsaw.cli.main); what was written stays resumable."""

    def __init__(self) -> None:
        self.objects: list = []
        self.failed: Optional[BaseException] = None


_LIBRARY_WRITES = StoreWrites()  # a caller that passes none: the objects of a failed write live as long as it


def prepare(source: str, out: str, size: int = 256, workers: Optional[int] = None, list_file: Optional[str] = None,
            progress: bool = True, layout: str = "jps", min_side: int = MIN_SIDE,
            writes: Optional[StoreWrites] = None) -> Tuple[int, List[Tuple[str, str]]]:
    """Decode every image under `source` (a folder, or a Caffe LMDB of Datums) into `out` (HDF5:
    images (N, side, side, 3) uint8 RGB in `layout`, one chunk per image; names; skipped + reasons).
    Images with a shorter side below `min_side` are skipped as junk (lower it for small-image sets,
    e.g. 28 px Fashion-MNIST upscaled with --size).
    Resumable: an interrupted run continues from `out`.partial; the store appears at `out` by rename.
    `writes` (a StoreWrites) says whether a write failed, and holds what must not be closed then."""
    writes = writes if writes is not None else _LIBRARY_WRITES
    if min_side < 1:
        raise UserError(f"min_side {min_side}: expected a positive number of pixels")
    if layout not in LAYOUTS:
        raise UserError(f"layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    records = None
    if is_lmdb(source):
        if list_file:
            raise UserError(f"{source}: --list applies to image folders, not to an LMDB")
        records = LmdbRecords(source)
        names = records.names()
    elif os.path.isdir(source):
        names = list_images(source, list_file)
    else:
        raise UserError(f"{source}: not a folder of images or a Caffe LMDB")
    if not names:
        raise UserError(f"{source}: no image files found")
    if os.path.isdir(out):
        raise UserError(f"-o {out}: is a folder; give the store's file name, e.g. {os.path.join(out, 'store.h5')}")
    side = stored_side(layout, size)
    digest = hashlib.sha1(("\n".join(map(_shown, names)) + f"|{side}|{layout}|{min_side}").encode()).hexdigest()
    # two prepares writing one store would interleave their images; out.lock is gone again at the end
    with RunFolder.for_file(out, "jigsaw prepare") as folder:
        folder.open()
        partial = out + ".partial"
        try:
            f = _open_partial(partial, len(names), side, layout, digest)
        except OSError as e:
            raise UserError(f"{out}: cannot write the store ({e})") from None
        folder.begun()  # the .partial store is this run's state: an interrupted run continues from it
        images, paths = f["images"], f["paths"]
        writes.objects[:] = [f, images, paths]  # until closed cleanly: see StoreWrites
        start, count = int(f.attrs["next"]), int(f.attrs["count"])
        skipped = [(p.decode(), r.decode()) for p, r in zip(f["skipped_paths"][()], f["skipped_reasons"][()])]
        workers = workers or max(1, (os.cpu_count() or 1))
        if records is not None:
            jobs = ((name, value, size, layout, min_side) for name, value in records.values(start))
        else:
            jobs = ((_shown(rel), os.path.join(source, rel), size, layout, min_side) for rel in names[start:])
        bar = tqdm(total=len(names), initial=start, unit="img", desc="prepare", disable=not progress)
        i = start
        try:
            with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
                while True:  # bounded submission: LMDB values travel to the workers a chunk at a time
                    chunk = list(itertools.islice(jobs, 32 * workers))
                    if not chunk:
                        break
                    for rel, arr, reason in pool.map(_decode, chunk, chunksize=8):
                        i += 1
                        with _writing(partial, writes):
                            if arr is None:
                                skipped.append((rel, reason))
                            else:
                                images[count] = arr
                                paths[count] = rel
                                count += 1
                            if i % FLUSH_EVERY == 0 or i == len(names):
                                _checkpoint(f, i, count, skipped)
                        bar.update(1)
        except KeyboardInterrupt:
            _checkpoint(f, i, count, skipped)
            f.close()
            writes.objects.clear()
            raise
        finally:
            bar.close()
            if records is not None:
                records.close()
        with _writing(partial, writes):
            images.resize(count, axis=0)
            paths.resize(count, axis=0)
            f.attrs["complete"] = True
            f.close()
        writes.objects.clear()
        if count == 0:  # finished, with nothing to keep: no .partial is left to "resume"
            os.unlink(partial)
            raise UserError(f"{source}: none of the {len(names)} images could be used "
                             f"(first: {skipped[0][0]}: {skipped[0][1]})")
        os.replace(partial, out)
        return count, skipped


@contextlib.contextmanager
def _writing(partial, writes):
    """A write to the store that fails (a full disk, a file-size limit) ends the prepare with one line."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # h5py reports a failed flush as a RuntimeError
        if isinstance(e, RuntimeError) and "write failed" not in str(e) and "errno" not in str(e):
            raise
        # neither closed nor released (writes.objects keeps the store's HDF5 objects): HDF5 crashes or fails
        # noisily closing a file whose write failed
        writes.failed = e
        errno = getattr(e, "errno", None) or next((int(w) for w in re.findall(r"errno = (\d+)", str(e))), None)
        why = os.strerror(errno) if errno else str(e).splitlines()[0]
        raise UserError(f"{partial}: cannot write the store ({why}); free space and run the same command "
                        "again: it continues from the last images written") from None


def _open_partial(partial, n, size, layout, digest):
    if os.path.exists(partial):
        try:
            f = h5py.File(partial, "r+")
            if f.attrs.get("digest") == digest:
                return f
            f.close()
        except OSError:  # left unreadable by a failed write: it is only a cache of decoded images
            pass
        os.unlink(partial)  # a different source or size, or unreadable: start over
    f = h5py.File(partial, "w")
    f.create_dataset("images", (n, size, size, 3), dtype=np.uint8, chunks=(1, size, size, 3),
                     maxshape=(None, size, size, 3))
    f.create_dataset("paths", (n,), dtype=h5py.string_dtype(), maxshape=(None,))
    for name in ("skipped_paths", "skipped_reasons"):
        f.create_dataset(name, (0,), dtype=h5py.string_dtype(), maxshape=(None,))
    # the layout as a fixed-length string: a variable-length one lives in HDF5's global heap, and a damaged
    # global heap makes libhdf5 spin forever reading it (found by tests/reliability/fuzz_files.py)
    f.attrs.update(next=0, count=0, size=size, layout=np.bytes_(layout), digest=digest, complete=False)
    if layout == "jps":
        f.attrs["crop"] = JPS_CROP
    return f


def _shown(name):
    """A file name as the store records it: bytes that are not UTF-8 (a file system allows them) as
    \\xNN escapes, so one odd name neither aborts a prepare nor goes unrecorded."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _checkpoint(f, next_index, count, skipped):
    for name, col in (("skipped_paths", 0), ("skipped_reasons", 1)):
        f[name].resize((len(skipped),))
        if skipped:
            f[name][:] = [s[col] for s in skipped]
    f.attrs["count"] = count
    f.attrs["next"] = next_index
    f.flush()


def _output(out, shape):
    if out is None:
        return np.empty(shape, np.uint8)
    if out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"read(out=...) needs a C-contiguous uint8 array of shape {shape}, got "
                         f"{out.shape} {out.dtype}")
    return out


class ImageStore:
    """Random access to a prepared store. When every image sits in its own uncompressed chunk at a
    regular stride (what `prepare` writes), reads are one NumPy gather over a memory map."""

    def __init__(self, path):
        user_file(path, "store (.h5, from jigsaw prepare)")
        self.path = path
        with decoding(path, "hdf5", "a prepared image store (run `jigsaw prepare`)"):
            self.file = h5py.File(path, "r")
            if "images" not in self.file:
                raise UserError(f"{path}: not a prepared image store (no 'images'); run `jigsaw prepare`")
            self.images = hdf5.dataset(self.file, "images", path)
            shape, dtype = self.images.shape, self.images.dtype
            if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8:
                raise UserError(f"{path}: 'images' must be (N, H, W, 3) uint8, got {shape} {dtype}")
            layout = self.file.attrs.get("layout", "square")  # stores from before layouts: square
            self.offsets = self._chunk_offsets(shape)
        self.shape = shape
        self.layout = layout.decode("utf-8", "replace") if isinstance(layout, bytes) else str(layout)
        self.map = np.memmap(path, dtype=np.uint8, mode="r") if self.offsets is not None else None

    def _chunk_offsets(self, shape):
        """File offset of each image when every image is one uncompressed chunk inside the file; else None."""
        n, per = shape[0], math.prod(shape[1:])
        ds = self.images.id
        if n == 0 or self.images.compression or self.images.chunks != (1, *shape[1:]):
            return None
        try:
            if ds.get_num_chunks() != n:
                return None
            offsets = np.full(n, -1, dtype=np.int64)

            def visit(info):
                if info.size == per:
                    offsets[info.chunk_offset[0]] = info.byte_offset
            if hasattr(ds, "chunk_iter"):
                ds.chunk_iter(visit)
            else:
                for k in range(n):
                    visit(ds.get_chunk_info(k))
        except (AttributeError, RuntimeError, ValueError, KeyError):
            return None
        inside = (offsets >= 0).all() and int(offsets.max()) + per <= os.path.getsize(self.path)
        return offsets if inside else None

    def __len__(self):
        return self.shape[0]

    @property
    def image_size(self):
        return self.shape[1:3]

    def read(self, indices, out=None):
        """Images at `indices` as a (k, H, W, 3) uint8 array, in the order given (repeats allowed);
        into `out` when given (e.g. a pinned buffer, so a GPU copy needs no extra host copy)."""
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.shape[0]):
            raise IndexError(f"{self.path}: image index out of range 0..{self.shape[0] - 1}")
        out = _output(out, (len(idx), *self.shape[1:]))
        if self.offsets is not None:  # one memcpy per image straight from the page cache
            per = out[0].size if len(idx) else 0
            flat = out.reshape(len(idx), -1)
            for k, off in enumerate(self.offsets[idx]):
                flat[k] = self.map[off:off + per]
            return out
        uniq, inverse = np.unique(idx, return_inverse=True)  # h5py wants increasing, unique indices
        with decoding(self.path, "hdf5", "a prepared image store (its images do not read)"):
            chunk = self.images[uniq]
        out[...] = chunk[inverse]
        return out


class FolderImages:
    """A raw image folder read on the fly (decode + resize per image; the slow path)."""

    def __init__(self, root, size=256, workers=0, layout="square"):
        self.root, self.layout, self.size = root, layout, stored_side(layout, size)
        self.arg_size = size
        self.files = list_images(root)
        if not self.files:
            raise UserError(f"{root}: no image files found")
        self.pool = ProcessPoolExecutor(workers, initializer=_init_worker) if workers else None

    def __len__(self):
        return len(self.files)

    @property
    def image_size(self):
        return (self.size, self.size)

    def read(self, indices, out=None):
        jobs = [(rel, os.path.join(self.root, rel), self.arg_size, self.layout, MIN_SIDE)
                for rel in (self.files[i] for i in indices)]
        results = self.pool.map(_decode, jobs, chunksize=4) if self.pool else map(_decode, jobs)
        out = _output(out, (len(jobs), self.size, self.size, 3))
        for k, (_, arr, _) in enumerate(results):
            out[k] = 0 if arr is None else arr  # unreadable files are black
        return out


def open_images(path, size=256, workers=0, decode="cpu", device="cpu", layout="square"):
    """An ImageStore for a prepared .h5 store; for a folder, FolderImages (decode 'cpu': PIL in
    `workers` processes) or DeviceJpegImages (decode 'device': torchvision.io on `device`), each
    decoding into `layout` on the fly."""
    if decode not in ("cpu", "device"):
        raise UserError(f"decode {decode!r}: expected cpu or device")
    if is_lmdb(path):
        raise UserError(f"{path}: a Caffe LMDB; run `jigsaw prepare {path} -o store.h5` first")
    if os.path.isdir(path):
        if decode == "device":
            from .device_decode import DeviceJpegImages
            return DeviceJpegImages(path, size, device, layout=layout)
        return FolderImages(path, size, workers, layout)
    if not os.path.exists(path):
        raise UserError(f"{path}: no such store or folder")
    return ImageStore(path)


def check_layout(source, cfg, path):
    """A store must hold the layout the recipe cuts puzzles from, at a size it can read."""
    if source.layout != cfg.layout:
        raise UserError(f"{path}: a '{source.layout}' store, but recipe '{cfg.recipe}' reads the "
                         f"'{cfg.layout}' layout; run `jigsaw prepare --layout {cfg.layout}`")
    h, w = source.image_size
    if max(h, w) > MAX_STORE_SIDE:
        raise UserError(f"{path}: images of {h}x{w}; stores hold at most {MAX_STORE_SIDE} px a side "
                        "(`jigsaw prepare` writes 256 by default), so this one is not read")
    if min(h, w) < cfg.min_image():
        raise UserError(f"{path}: images of {h}x{w}; recipe '{cfg.recipe}' reads {cfg.min_image()} px")


def fingerprint(source) -> str:
    """Which images a source holds, cheaply: their count, size and the bytes of three of them. A run
    records it so a resume given other images under a moved or reused path is refused."""
    import hashlib
    n = len(source)
    h = hashlib.sha1(f"{n} {tuple(source.image_size)}".encode())
    if n:
        images = source.read(sorted({0, n // 2, n - 1}))
        h.update(np.ascontiguousarray(images.cpu().numpy() if hasattr(images, "cpu") else images).tobytes())
    return h.hexdigest()[:16]
