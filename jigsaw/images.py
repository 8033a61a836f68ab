"""Decode any image file (or encoded bytes) into a store layout's uint8 RGB array, robustly."""
import os
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageFile

from tools.run.errors import ImageRefused
from tools.run.images import EXTENSIONS, open_image
from tools.run.paths import inside, is_regular, user_file

from .config import MIN_SIDE
from .layouts import jps_array

MAX_ASPECT = 16        # longer / shorter side: beyond it a centre crop is a sliver and the resize explodes
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImage(Exception):
    """An image that cannot be used; the message says why (truncated, not an image, tiny, ...)."""


def _to_rgb(img):
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float: scale to 8 bits
        a = np.asarray(img, dtype=np.float64)
        hi = a.max() if a.size else 0
        a = a / (65535.0 if img.mode.startswith("I;16") or hi > 255 else max(hi, 1.0)) * 255.0
        img = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def store_refusal(w: int, h: int, min_side: int) -> Optional[str]:
    """Why an image of w x h pixels does not go into a store (None: it does); both decoders ask this."""
    if min(w, h) < min_side:
        return f"tiny ({w}x{h}, shorter side < {min_side})"
    if max(w, h) > MAX_ASPECT * min(w, h):
        return f"a sliver ({w}x{h}, sides over {MAX_ASPECT}:1)"
    return None


def decode(source, min_side=MIN_SIDE, draft_at=None):
    """An RGB PIL image from a path or encoded bytes; BadImage says why one cannot be used. JPEGs
    with a shorter side of at least `draft_at` decode at half size (faster, still >= 2x)."""
    try:
        with open_image(source) as img:
            refusal = store_refusal(*img.size, min_side)
            if refusal:
                raise BadImage(refusal)
            if draft_at and img.format == "JPEG" and min(img.size) >= draft_at:
                img.draft("RGB", (img.size[0] // 2, img.size[1] // 2))
            img.load()
            return _to_rgb(img)
    except ImageRefused as e:
        raise BadImage(e.reason) from None


def to_layout(img, layout="square", size=256):
    """An RGB PIL image (or (H, W, 3) uint8 array) as the store `layout` holds it (jigsaw.layouts)."""
    if layout == "jps":
        arr = np.array(img, dtype=np.uint8)  # writable: torch warns on a read-only PIL view
        return jps_array(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)).numpy()
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_image(path, size=256, min_side=MIN_SIDE, layout="square"):
    """A file (or encoded bytes) decoded into the store `layout`: (size, size, 3) uint8 for
    "square" (shorter side resized bilinear, centre crop), (257, 257, 3) for "jps"."""
    # the fork resizes the full decode: no DCT-domain shortcut for jps
    img = decode(path, min_side, draft_at=4 * size if layout == "square" else None)
    return to_layout(img, layout, size)


def list_images(root, list_file=None):
    """Relative paths of the images under `root` (sorted), or those named in a Caffe list file
    ('relative/path [label]' per line)."""
    if list_file:
        out = []
        user_file(list_file, "--list file ('relative/path [label]' lines)")
        with open(list_file, encoding="utf-8", errors="surrogateescape") as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    rel = line.rsplit(None, 1)[0] if line.split()[-1].lstrip("-").isdigit() \
                        and len(line.split()) > 1 else line
                    inside(root, rel, f"{list_file}:{number}")
                    out.append(rel)
        return out
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if name.lower().endswith(EXTENSIONS) and not name.startswith(".") and is_regular(path):
                out.append(os.path.relpath(path, root))
    return out
