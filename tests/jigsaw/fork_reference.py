"""A float64 transcription of the jigsaw fork's C++ puzzle code, written from its semantics
(caffe-master-jps++/src/caffe/data_transformer.cpp `Transform`, layers/merge_data_layer.cpp,
layers/mvn_layer.cpp), fed explicit draws instead of rand(). Loops follow the C++ structure; only the
innermost pixel loops are NumPy slices. Kept apart from jigsaw/tiles.py on purpose: it shares no code.
"""
import numpy as np


def datum_from_rgb(image):
    """An (H, W, 3) RGB uint8 image as Caffe's Datum.data: planar (C, H, W) in B, G, R order."""
    return np.ascontiguousarray(np.asarray(image)[:, :, ::-1].transpose(2, 0, 1))


def transform(datum, crop_size, patch, jitter_x_, jitter_y_, extra_x, extra_y, make_gray, color_proj,
              hash_row=None, mean_values=None, h_off=0, w_off=0, siamese=9):
    """One puzzle, (siamese*3, patch, patch) float32 (the fork's Dtype buffer).

    datum: (3, H, W) uint8; jitter_x_/jitter_y_: (siamese,) per position s; extra_x/extra_y:
    (siamese, 3) the per-channel rand()%3; hash_row: the label's permutation (0-indexed, the fork
    subtracts 1 on load) or None for a Data layer without hash_file (grid order)."""
    c_count, height, width = datum.shape
    flat = datum.reshape(-1)
    side = int(np.sqrt(siamese))
    src = []  # src_rcts: (x, y) of cell (i, j), row-major, crop_size/sqrt(siamese) px
    for i in range(side):
        for j in range(side):
            src.append((int(j * crop_size / np.sqrt(siamese)), int(i * crop_size / np.sqrt(siamese))))
    dst = [src[hash_row[i]] for i in range(siamese)] if hash_row is not None else list(src)
    top = np.zeros(siamese * c_count * patch * patch, dtype=np.float32)
    hh, ww = np.meshgrid(np.arange(patch), np.arange(patch), indexing="ij")
    for s in range(siamese):
        for c in range(c_count):
            jx = jitter_x_[s] + extra_x[s][c]
            jy = jitter_y_[s] + extra_y[s][c]
            data_index = ((c * height + h_off + dst[s][1] + jy + hh) * width
                          + w_off + dst[s][0] + ww + jx)
            element = flat[data_index].astype(np.float64)
            value = element - mean_values[c] if mean_values is not None else element
            base = s * patch * patch * c_count + c * patch * patch
            top[base:base + patch * patch] = value.reshape(-1).astype(np.float32)
    if siamese > 1:
        for s in range(siamese):
            base = s * patch * patch * 3
            b = top[base:base + patch * patch].astype(np.float64)
            g = top[base + patch * patch:base + 2 * patch * patch].astype(np.float64)
            r = top[base + 2 * patch * patch:base + 3 * patch * patch].astype(np.float64)
            if not make_gray:
                if color_proj:
                    top[base + 2 * patch * patch:base + 3 * patch * patch] = 0.8333 * r + 0.3333 * g + -0.1667 * b
                    top[base + patch * patch:base + 2 * patch * patch] = 0.3333 * r + 0.3333 * g + 0.3333 * b
                    top[base:base + patch * patch] = -0.1667 * r + 0.3333 * g + 0.8333 * b
            else:
                gray = (0.3333 * r + 0.3333 * g + 0.3333 * b).astype(np.float32)
                for k in range(3):
                    top[base + k * patch * patch:base + (k + 1) * patch * patch] = gray
    return top.reshape(siamese * c_count, patch, patch)


def merge_data(own, other, rand_indices):
    """MergeData for one item: own/other (T, C, h, w); rand_indices[i] = -1 keeps tile i, else
    the position of `other` copied into it."""
    out = own.copy()
    for i, k in enumerate(rand_indices):
        if k >= 0:
            out[i] = other[k]
    return out


def mvn_across(x, eps=1e-9):
    """MVN across channels of one tile (C, h, w) in float64: (x - mean) / (sqrt(E[(x-mean)^2]) + eps)."""
    x = x.astype(np.float64)
    centred = x - x.mean()
    return centred / (np.sqrt((centred ** 2).mean()) + eps)
