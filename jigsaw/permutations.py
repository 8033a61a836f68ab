"""Permutation sets for 3x3 puzzles chosen by maximal Hamming distance (Noroozi & Favaro 2016, Alg. 1).

Greedy: start from one random permutation of all 9! orders, then repeatedly add the candidate
whose summed (mean) Hamming distance to the chosen set is largest; `criterion="min"` takes the
candidate whose distance to its nearest chosen permutation is largest instead. Files: .npy
(0-indexed, the PyTorch ports' form), .bin (the original Caffe release: int32 header [N, 9], then
N*9 int32, 1-indexed) and .h5 (dataset "permutations", 0-indexed).
"""
import itertools
import math
import os

import numpy as np

from tools.run.atomic import atomic_open
from tools.run import hdf5
from tools.run.decoding import decoding
from tools.run.errors import UserError
from tools.run.paths import user_file
from tools.run.runtime import numpy_rng

N_TILES = 9
_ALL = None


def all_permutations():
    """All 9! orders as an (362880, 9) int8 array, lexicographic (cached)."""
    global _ALL
    if _ALL is None:
        _ALL = np.array(list(itertools.permutations(range(N_TILES))), dtype=np.int8)
    return _ALL


def make_permutations(n: int, seed: int = 0, criterion: str = "mean") -> np.ndarray:
    """An (n, 9) int array of 0-indexed permutations chosen greedily for maximal Hamming distance."""
    if criterion not in ("mean", "min"):
        raise ValueError(f"criterion must be 'mean' or 'min', got {criterion!r}")
    pool = all_permutations()
    if not 1 <= n <= len(pool):
        raise ValueError(f"n must be between 1 and {len(pool)}, got {n}")
    rng = numpy_rng(seed)
    columns = np.ascontiguousarray(pool.T)  # position-major: 9 long contiguous rows are fast to compare

    def distance_to(k):
        d = np.zeros(len(pool), dtype=np.int32)
        for j in range(N_TILES):
            d += columns[j] != columns[j, k]
        return d

    chosen = [int(rng.integers(len(pool)))]
    # score[k]: summed distance (mean criterion) or nearest distance (min) from candidate k to the set
    score = distance_to(chosen[0])
    score[chosen[0]] = -1
    for _ in range(n - 1):
        k = int(np.argmax(score))
        chosen.append(k)
        dist = distance_to(k)
        taken = score < 0
        score = score + dist if criterion == "mean" else np.minimum(score, dist)
        score[taken] = -1
        score[k] = -1
    return pool[chosen].astype(np.int64)


def hamming_stats(perms):
    """(mean, min) pairwise Hamming distance of a permutation set (mean over distinct pairs)."""
    perms = np.asarray(perms)
    if len(perms) < 2:
        return 0.0, 0
    d = (perms[:, None, :] != perms[None, :, :]).sum(axis=2)
    iu = np.triu_indices(len(perms), k=1)
    return float(d[iu].mean()), int(d[iu].min())


def validate(perms, source="permutations"):
    perms = np.asarray(perms)
    if perms.dtype.kind == "f" and np.isfinite(perms).all() and (perms == np.round(perms)).all():
        perms = perms.astype(np.int64)  # whole numbers stored as floats (MATLAB's habit)
    if perms.dtype.kind not in "iu":
        raise UserError(f"{source}: expected integers, got {perms.dtype}")
    if perms.ndim != 2 or perms.shape[1] != N_TILES:
        raise UserError(f"{source}: expected an (N, 9) array, got shape {perms.shape}")
    if not len(perms):
        raise UserError(f"{source}: holds no permutations")
    if not (np.sort(perms, axis=1) == np.arange(N_TILES)).all():  # the values are not echoed: any file's
        bad = int(np.flatnonzero((np.sort(perms, axis=1) != np.arange(N_TILES)).any(axis=1))[0])
        raise UserError(f"{source}: row {bad} is not a permutation of 0..8")
    if len(np.unique(perms, axis=0)) != len(perms):
        raise UserError(f"{source}: the set holds duplicate permutations")
    return perms.astype(np.int64)


def save_permutations(path: str, perms: np.ndarray) -> None:
    """Write .npy, .bin or .h5 by extension (atomically)."""
    perms = validate(perms)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".npy", ".bin", ".h5", ".hdf5"):
        raise UserError(f"{path}: unknown permutation file type (use .npy, .bin or .h5)")
    with atomic_open(path, "w+b") as f:
        if ext == ".npy":
            np.save(f, perms)
        elif ext == ".bin":
            f.write(np.array(perms.shape, "<i4").tobytes() + (perms + 1).astype("<i4").tobytes())
        else:
            import h5py
            with h5py.File(f, "w") as h5:
                h5["permutations"] = perms
                h5["permutations"].attrs["indexing"] = "0-based"


MAX_FILE_BYTES = 1 << 26  # 9! permutations as int64 .npy take 26 MB; a permutation file is never larger


def _load_npy(path):
    """np.load, after checking that the header's shape (multiplied as Python integers) fits the bytes the file
    holds."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise UserError(f"{path}: .npy format version {version} is not read here (1.0 or 2.0)")
        shape, fortran, dtype = readers[version](f)
        if dtype.hasobject:
            raise UserError(f"{path}: holds Python objects, not integers")
        need = math.prod(int(d) for d in shape) * dtype.itemsize
        have = os.path.getsize(path) - f.tell()
    if need > have:
        raise UserError(f"{path}: its header declares shape {shape} ({need} bytes), the file holds {have}")
    return np.load(path, allow_pickle=False)


def _load_bin(path):
    raw = np.fromfile(path, dtype="<i4")
    if raw.size < 2 or int(raw[1]) != N_TILES or raw.size != 2 + int(raw[0]) * N_TILES:
        raise UserError(f"{path}: not an original permutation .bin (header [N, 9] then N*9 int32; found "
                        f"{raw.size} values, header {raw[:2].tolist()})")
    return raw[2:].reshape(-1, N_TILES).astype(np.int64) - 1


def _load_h5(path):
    import h5py
    with h5py.File(path, "r") as f:
        if "permutations" not in f:
            raise UserError(f"{path}: no 'permutations' dataset")
        return hdf5.dataset(f, "permutations", path)[()]


def load_permutations(path: str) -> np.ndarray:
    """Read .npy (0-indexed), .bin (original, 1-indexed) or .h5; returns 0-indexed (N, 9) int64."""
    ext = os.path.splitext(path)[1].lower()
    user_file(path, "permutation file (.npy, .bin or .h5)")
    readers = {".npy": (_load_npy, "numpy"), ".bin": (_load_bin, "numpy"), ".h5": (_load_h5, "hdf5"),
               ".hdf5": (_load_h5, "hdf5")}
    if ext not in readers:
        raise UserError(f"{path}: unknown permutation file type (use .npy, .bin or .h5)")
    if os.path.getsize(path) > MAX_FILE_BYTES:
        raise UserError(f"{path}: {os.path.getsize(path)} bytes; a permutation file is at most "
                        f"{MAX_FILE_BYTES >> 20} MB (all 9! permutations)")
    read, library = readers[ext]
    with decoding(path, library, f"a permutation file ({ext})"):
        perms = read(path)
    return validate(perms, path)
