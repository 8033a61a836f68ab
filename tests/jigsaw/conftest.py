"""Fixtures: real photographs (scikit-image's bundled samples) and odd files, written to disk."""
import numpy as np
import pytest
from PIL import Image

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "camera", "coins", "moon"]


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    data = pytest.importorskip("skimage.data")
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    for i, name in enumerate(PHOTOS):
        folder = root / "sub" if i % 2 else root
        Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB").save(folder / f"{name}.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def photo_store(photo_dir, tmp_path_factory):
    from jigsaw.store import prepare
    out = str(tmp_path_factory.mktemp("store") / "photos.h5")
    prepare(str(photo_dir), out, progress=False, workers=1)
    return out


@pytest.fixture(scope="session")
def photo_store_square(photo_dir, tmp_path_factory):
    from jigsaw.store import prepare
    out = str(tmp_path_factory.mktemp("store") / "photos_square.h5")
    prepare(str(photo_dir), out, progress=False, workers=1, layout="square")
    return out


def small_run(folder, store, n_perms, **overrides):
    """TrainConfig fields for a few-second run on `store` with a fresh permutation set in `folder`."""
    from jigsaw.permutations import make_permutations, save_permutations
    perms = str(folder / f"p{n_perms}.npy")
    save_permutations(perms, make_permutations(n_perms))
    return dict(dict(data=store, permutations=perms, batch_size=8, width=0.125, max_iter=3, test_interval=0,
                     snapshot=0, progress=False, val_fraction=0.25, dropout=0.0), **overrides)
