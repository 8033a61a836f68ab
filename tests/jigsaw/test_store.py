"""`prepare` (odd images, resume, list files) and the store reader."""
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from jigsaw import store as store_mod
from jigsaw.images import load_image
from jigsaw.store import ImageStore, prepare
from tools.run.errors import UserError


def _odd_folder(root, photo_dir):
    root.mkdir()
    good = Image.open(photo_dir / "astronaut.jpg")
    good.save(root / "ok.jpg")
    raw = (photo_dir / "astronaut.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(raw[: len(raw) // 2])
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.png").write_text("not an image")
    good.convert("CMYK").save(root / "cmyk.jpg")
    good.convert("RGBA").save(root / "rgba.png")
    good.convert("L").save(root / "gray.png")
    Image.fromarray((np.asarray(good.convert("L"), np.uint16) * 257)).save(root / "sixteen.png")
    good.resize((40, 30)).save(root / "tiny.png")
    Image.new("RGB", (300, 200), (10, 200, 30)).save(root / "wide.bmp")
    return root


def test_odd_images_are_converted_or_skipped_and_listed(tmp_path, photo_dir):
    root = _odd_folder(tmp_path / "odd", photo_dir)
    count, skipped = prepare(str(root), str(tmp_path / "s.h5"), progress=False, workers=1, layout="square")
    reasons = dict(skipped)
    assert count == 6
    assert reasons == {"truncated.jpg": "truncated", "empty.jpg": "not an image",
                       "notes.png": "not an image", "tiny.png": "tiny (40x30, shorter side < 64)"}
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["images"].shape == (6, 256, 256, 3)
        assert sorted(p.decode() for p in f["skipped_paths"][()]) == sorted(reasons)
        names = [p.decode() for p in f["paths"][()]]
        gray = f["images"][names.index("gray.png")]
        assert (gray[..., 0] == gray[..., 1]).all()
        assert f["images"][names.index("wide.bmp")][128, 128].tolist() == [10, 200, 30]


def test_sixteen_bit_png_scales_to_eight_bits(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.full((100, 100), 65535, np.uint16)).save(path)
    assert load_image(str(path), 64).max() == 255


def test_interrupted_prepare_resumes_to_the_same_store(tmp_path, photo_dir, monkeypatch):
    clean = tmp_path / "clean.h5"
    prepare(str(photo_dir), str(clean), progress=False, workers=1)
    monkeypatch.setattr(store_mod, "FLUSH_EVERY", 2)
    calls = {"n": 0}
    real = store_mod._checkpoint

    def interrupt_after_first_flush(*a):
        real(*a)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(store_mod, "_checkpoint", interrupt_after_first_flush)
    out = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        prepare(str(photo_dir), str(out), progress=False, workers=1)
    assert not out.exists() and (tmp_path / "resumed.h5.partial").exists()
    with h5py.File(tmp_path / "resumed.h5.partial") as f:
        done = int(f.attrs["next"])
    assert 0 < done < 8
    monkeypatch.setattr(store_mod, "_checkpoint", real)
    prepare(str(photo_dir), str(out), progress=False, workers=1)
    with h5py.File(clean) as a, h5py.File(out) as b:
        assert np.array_equal(a["images"][()], b["images"][()])
        assert list(a["paths"][()]) == list(b["paths"][()])


def test_list_file(tmp_path, photo_dir):
    lst = tmp_path / "train.txt"
    lst.write_text("astronaut.jpg 3\nsub/chelsea.jpg 7\n")
    count, _ = prepare(str(photo_dir), str(tmp_path / "l.h5"), list_file=str(lst), progress=False, workers=1)
    assert count == 2


def test_reader_fast_path_matches_h5py_with_repeats(photo_store):
    s = ImageStore(photo_store)
    assert s.offsets is not None
    idx = np.array([3, 0, 3, 7, 1])
    with h5py.File(photo_store) as f:
        want = f["images"][()][idx]
    assert np.array_equal(s.read(idx), want)
    s.offsets = None  # the h5py fallback agrees, repeats included
    assert np.array_equal(s.read(idx), want)


def test_reads_fill_a_given_buffer_on_both_paths_and_the_folder_reader(photo_store, photo_dir):
    """What the CUDA batch stream relies on: read(out=) writes the batch into its page-locked buffer."""
    s = ImageStore(photo_store)
    idx = np.array([5, 2, 5])
    want = s.read(idx)
    for offsets in (s.offsets, None):
        s.offsets = offsets
        buf = np.full((3, *s.image_size, 3), 7, np.uint8)
        assert s.read(idx, out=buf) is buf and np.array_equal(buf, want)
    folder = store_mod.FolderImages(str(photo_dir), 64)
    buf = np.full((2, 64, 64, 3), 7, np.uint8)
    assert folder.read([1, 0], out=buf) is buf and np.array_equal(buf, folder.read([1, 0]))
    with pytest.raises(ValueError, match="C-contiguous uint8 array of shape"):
        s.read(idx, out=np.empty((2, *s.image_size, 3), np.uint8))


def test_bad_sources(tmp_path):
    with pytest.raises(UserError, match="not a folder"):
        prepare(str(tmp_path / "nope"), str(tmp_path / "x.h5"), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        prepare(str(tmp_path / "empty"), str(tmp_path / "x.h5"), progress=False)
    (tmp_path / "bad.h5").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a prepared image store"):
        ImageStore(str(tmp_path / "bad.h5"))
    assert not os.path.exists(tmp_path / "x.h5")
