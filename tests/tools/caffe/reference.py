"""Float64 NumPy transcriptions of Caffe's layer loops (the specification the tests hold us to)."""
import math

import numpy as np

FLT_MAX = np.finfo(np.float32).max


def pool(x, method, k, s, p):
    """Caffe PoolingLayer::Forward_cpu for MAX/AVE on (N, C, H, W)."""
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    n, c, h, w = x.shape
    oh = int(math.ceil((h + 2 * ph - kh) / sh)) + 1
    ow = int(math.ceil((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            if method == "max":
                he, we = min(hs + kh, h), min(ws + kw, w)
                hs, ws = max(hs, 0), max(ws, 0)
                win = x[:, :, hs:he, ws:we]
                out[:, :, i, j] = win.max(axis=(2, 3)) if win.size else -FLT_MAX
                if win.size:
                    out[:, :, i, j] = np.maximum(out[:, :, i, j], -FLT_MAX)
            else:
                he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                out[:, :, i, j] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / size
    return out


def lrn_across(x, n, alpha, beta, k):
    c = x.shape[1]
    out = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - (n - 1) // 2), min(c, ch + (n - 1) // 2 + 1)
        scale = k + alpha / n * (x[:, lo:hi] ** 2).sum(axis=1)
        out[:, ch] = x[:, ch] * scale ** -beta
    return out


def lrn_within(x, n, alpha, beta):
    half = (n - 1) // 2
    avg = pool(x * x, "ave", (n, n), (1, 1), (half, half))
    return x * (1 + alpha * avg) ** -beta


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_loss(scores, labels, ignore=None, mode="VALID"):
    prob = softmax(scores, 1)
    n, c = scores.shape[:2]
    inner = int(np.prod(scores.shape[2:]))
    prob = prob.reshape(n, c, inner)
    lab = labels.reshape(n, inner).astype(int)
    loss, count = 0.0, 0
    for i in range(n):
        for j in range(inner):
            if ignore is not None and lab[i, j] == ignore:
                continue
            loss -= math.log(max(prob[i, lab[i, j], j], np.finfo(np.float32).tiny))
            count += 1
    norm = {"FULL": n * inner, "VALID": count if ignore is not None else n * inner,
            "BATCH_SIZE": n, "NONE": 1}[mode]
    return loss / max(norm, 1)


def accuracy(scores, labels, top_k, ignore=None):
    hits = total = 0
    for row, lab in zip(scores, labels.astype(int)):
        if ignore is not None and lab == ignore:
            continue
        total += 1
        hits += int((row >= row[lab]).sum() - 1 < top_k)  # accuracy_layer.cpp: ties count against
    return hits / max(total, 1)
