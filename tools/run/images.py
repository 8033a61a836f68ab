"""Image files from a user's folder, opened with the project's checks: a regular file (a FIFO would block
the reader forever), at most MAX_PIXELS by the header, before any pixel is decoded, and PIL's
decompression-bomb warning taken as a refusal, and only the decoders of FORMATS. Every reader of user images
goes through `open_image`."""
import contextlib
import io
import warnings
from typing import Iterator, Optional, Union

import numpy as np

from .errors import ImageRefused, UserError
from .paths import is_regular

MAX_PIXELS = 1 << 26   # 67M pixels (8k x 8k): a larger image is refused from its header, before decoding
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
# the decoders PIL may use, whatever a file's name or first bytes claim: an EPS named .jpg would start
# Ghostscript, an outside program (PPM covers .pgm and .pbm)
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


@contextlib.contextmanager
def open_image(source: Union[str, bytes]) -> Iterator["PIL.Image.Image"]:  # noqa: F821
    """The PIL image of a path or encoded bytes, its header read and checked, its pixels not yet decoded.
    What fails inside the block while decoding (a truncated file) is refused the same way."""
    from PIL import Image
    where = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not is_regular(source):
        raise ImageRefused(where, "not a regular file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=FORMATS) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise ImageRefused(where, f"huge ({w}x{h}, over {MAX_PIXELS} pixels)")
                yield img
    except UserError:  # a refusal of ours (it is a ValueError too), or the caller's own
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRefused(where, "huge (over PIL's decompression-bomb limit)") from None
    except OSError as e:
        msg = str(e)
        reason = "truncated" if "truncated" in msg else ("not an image" if "cannot identify" in msg
                                                        else f"unreadable ({msg})")
        raise ImageRefused(where, reason) from None
    except (ValueError, SyntaxError, MemoryError) as e:
        raise ImageRefused(where, f"unreadable ({e})") from None


def read_image(path: str, mode: str = "RGB", draft: Optional[int] = None) -> np.ndarray:
    """An image file as uint8 (H, W, 3) for mode "RGB" or (H, W) for "L". A JPEG decodes no larger than
    needed when `draft` (the side wanted) is given. Refused in one line (ImageRefused)."""
    with open_image(path) as im:
        if draft:
            im.draft(mode, (draft, draft))
        return np.asarray(im.convert(mode))
