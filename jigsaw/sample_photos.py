"""Real photographs shipped with scikit-image (CC0 / public domain), cut into 256 px crops: unlabeled
data for the demo and the benchmarks, no download needed."""
import os
import re

import numpy as np

TRAIN = ["astronaut", "chelsea", "retina", "hubble_deep_field", "immunohistochemistry", "camera", "coins",
         "moon", "clock", "page", "text", "colorwheel"]
HELD_OUT = ["coffee", "rocket"]


def licence(name):
    """The licence line of a scikit-image sample, from its docstring's Notes."""
    import skimage.data as data
    doc = " ".join((getattr(data, name).__doc__ or "").split())
    m = re.search(r"Notes -+ (.*?)(Returns|References|\.\. |$)", doc)
    return (m.group(1) if m else doc[:160]).strip()


def write_photos(folder, names, stride):
    """256 px crops at three scales of each photograph, as JPEG files (what a user's folder holds)."""
    import skimage.data as data
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for name in names:
        im = Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
        for scale in (1.0, 0.75, 0.5):
            s = im.resize((max(256, int(im.width * scale)), max(256, int(im.height * scale))), Image.BILINEAR)
            for y in range(0, s.height - 255, stride):
                for x in range(0, s.width - 255, stride):
                    s.crop((x, y, x + 256, y + 256)).save(os.path.join(folder, f"{name}_{scale}_{y}_{x}.jpg"),
                                                          quality=92)


def write_sources(path, names):
    with open(path, "w") as f:
        for name in names:
            f.write(f"{name}: skimage.data.{name}() - {licence(name)}\n")
