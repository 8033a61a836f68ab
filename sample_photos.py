"""Real photographs shipped with scikit-image (CC0 / public domain), cut into 256 px crops: unlabeled
data for the demo, the tests and the benchmarks, no download needed (scikit-image is a test extra, so
this lives beside demo.py, not in the library)."""
import os
import re

import numpy as np

TRAIN = ["astronaut", "chelsea", "retina", "hubble_deep_field", "immunohistochemistry", "camera", "coins",
         "moon", "clock", "page", "text", "colorwheel"]
HELD_OUT = ["coffee", "rocket"]


# sentences of a sample's docstring that say where it comes from and under what terms
SOURCE_WORDS = ("copyright", "public domain", "cc0", "creative commons", "licen", "downloaded from",
                "photographer", "acquired at", "captured by")


def licence(name):
    """Where a scikit-image sample comes from and its terms: the docstring's sentences that say so, in
    full; a sample whose docstring states none says that."""
    import skimage.data as data
    doc = " ".join((getattr(data, name).__doc__ or "").split())
    body = re.split(r" ?References -+ ", doc)[0]
    body = re.sub(r"(Returns|Notes) -+ |\.\. versionchanged:: [\d.]+ [^.]*\. ?", "", body)
    said = [s for s in re.split(r"(?<=[.!?]) ", body) if any(w in s.lower() for w in SOURCE_WORDS)]
    return " ".join(said) if said else ("its docstring states no source or licence; it ships in scikit-image's "
                                        "data folder, under scikit-image's BSD-3-Clause licence")


def crops(names, stride):
    """(file stem, 256 px PIL crop) at three scales of each photograph, every `stride` px."""
    import skimage.data as data
    from PIL import Image
    for name in names:
        im = Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
        for scale in (1.0, 0.75, 0.5):
            s = im.resize((max(256, int(im.width * scale)), max(256, int(im.height * scale))), Image.BILINEAR)
            for y in range(0, s.height - 255, stride):
                for x in range(0, s.width - 255, stride):
                    yield f"{name}_{scale}_{y}_{x}", s.crop((x, y, x + 256, y + 256))


def write_photos(folder, names, stride):
    """The crops as JPEG files (what a user's folder holds)."""
    os.makedirs(folder, exist_ok=True)
    for stem, crop in crops(names, stride):
        crop.save(os.path.join(folder, f"{stem}.jpg"), quality=92)


def write_sources(path, names):
    with open(path, "w") as f:
        for name in names:
            f.write(f"{name}: skimage.data.{name}() - {licence(name)}\n")
