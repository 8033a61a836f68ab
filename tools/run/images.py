"""Image files from a user's folder, opened with the project's checks: a regular file (a FIFO would block
the reader forever), at most MAX_PIXELS by the header, before any pixel is decoded, and PIL's
decompression-bomb warning taken as a refusal, and only the decoders of FORMATS. Every reader of user images
goes through `open_image`."""
import contextlib
import io
import os
import warnings
from typing import Iterator, Optional, Union

import numpy as np

from .decoding import decoding
from .errors import ImageRefused
from .paths import is_regular

MAX_PIXELS = 1 << 26   # 67M pixels (8k x 8k): a larger image is refused from its header, before decoding
MAX_FILE_BYTES = 1 << 30  # an image file is read into memory before decoding; no photograph comes near this
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
# the decoders PIL may use, whatever a file's name or first bytes claim: an EPS named .jpg would start
# Ghostscript, an outside program (PPM covers .pgm and .pbm)
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


def _refusal(where: str, e: BaseException) -> ImageRefused:
    """What a decoder's complaint means to a user, in a few words."""
    from PIL import Image
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageRefused(where, "huge (over PIL's decompression-bomb limit)")
    msg = " ".join(str(e).split())
    if isinstance(e, OSError):
        return ImageRefused(where, "truncated" if "truncated" in msg else
                            "not an image" if "cannot identify" in msg else f"unreadable ({msg[:160]})")
    return ImageRefused(where, f"unreadable ({type(e).__name__}: {msg[:160]})")


def _file_bytes(path: str) -> bytes:
    """The bytes of an image file: a regular file (a FIFO would block the reader forever) of at most
    MAX_FILE_BYTES."""
    if not is_regular(path):
        raise ImageRefused(path, "not a regular file")
    with decoding(path, "file", make=lambda e: ImageRefused(path, f"unreadable ({getattr(e, 'strerror', e)})")):
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES:  # f.read(n) would allocate n bytes first
                raise ImageRefused(path, f"huge (a file over {MAX_FILE_BYTES >> 20} MB)")
            return f.read()


@contextlib.contextmanager
def open_image(source: Union[str, bytes]) -> Iterator["PIL.Image.Image"]:  # noqa: F821
    """The PIL image of a path or encoded bytes, its header read and checked, its pixels not yet decoded.
    What the decoder raises inside the block while decoding (a truncated file) is refused the same way."""
    from PIL import Image
    where = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        source = _file_bytes(where)
    with decoding(where, "pil", make=lambda e: _refusal(where, e)), warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # decoded from memory: a chunk length read from a damaged header asks a file object for that many
        # bytes, which it allocates before reading; from memory, a read returns only what is there
        with Image.open(io.BytesIO(source), formats=FORMATS) as img:
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise ImageRefused(where, f"huge ({w}x{h}, over {MAX_PIXELS} pixels)")
            yield img


def read_image(path: str, mode: str = "RGB", draft: Optional[int] = None) -> np.ndarray:
    """An image file as uint8 (H, W, 3) for mode "RGB" or (H, W) for "L". A JPEG decodes no larger than
    needed when `draft` (the side wanted) is given. Refused in one line (ImageRefused)."""
    with open_image(path) as im:
        if draft:
            im.draft(mode, (draft, draft))
        return np.asarray(im.convert(mode))
