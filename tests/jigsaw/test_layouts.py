"""Store layouts and sources: the fork's dataset form (OpenCV-bilinear resize, centre 255 crop, the
2 px it reads past), Caffe LMDBs of Datums, and stores refused by recipes that cannot read them."""
import io
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from PIL import Image

from jigsaw.layouts import JPS_SIDE, jps_resized_size
from jigsaw.store import ImageStore, check_layout, open_images, prepare
from jigsaw.recipes import recipe
from tools.caffe import caffe_pb2 as pb
from tools.run.errors import UserError


def _fork_form(rgb):
    """generate_jps_dataset with OpenCV itself: the 257 px window from the centre-crop corner,
    edge-clamped where the resized image ends."""
    cv2 = pytest.importorskip("cv2")
    h, w = rgb.shape[:2]
    nw, nh = jps_resized_size(w, h)
    r = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (nh - 255) // 2, (nw - 255) // 2
    ys = np.minimum(top + np.arange(JPS_SIDE), nh - 1)
    xs = np.minimum(left + np.arange(JPS_SIDE), nw - 1)
    return r[ys][:, xs]


def test_jps_layout_is_opencvs_resize_within_one_grey_level(tmp_path, photo_dir):
    out = str(tmp_path / "jps.h5")
    prepare(str(photo_dir), out, progress=False, workers=1, layout="jps")
    store = ImageStore(out)
    assert store.layout == "jps" and store.image_size == (257, 257)
    names = [p.decode() for p in store.file["paths"][()]]
    for k, name in enumerate(names):
        rgb = np.asarray(Image.open(photo_dir / name).convert("RGB"))
        want = _fork_form(rgb).astype(int)
        diff = np.abs(store.read([k])[0].astype(int) - want)
        assert diff.max() <= 1, name
    assert jps_resized_size(500, 375) == (341, 256) and jps_resized_size(375, 500) == (256, 341)


def _lmdb(path, records):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, value in records:
            txn.put(key, value)
    env.close()
    return str(path)


def _raw_datum(rgb):
    bgr_planes = np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))
    return pb.Datum(channels=3, height=rgb.shape[0], width=rgb.shape[1], data=bgr_planes.tobytes(),
                    label=7).SerializeToString()


def _encoded_datum(rgb, fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return pb.Datum(data=buf.getvalue(), encoded=True, label=3).SerializeToString()


def test_prepare_reads_a_caffe_lmdb_raw_and_encoded_and_lists_bad_records(tmp_path, photo_dir):
    rgb = np.asarray(Image.open(photo_dir / "astronaut.jpg").convert("RGB"))
    other = np.asarray(Image.open(photo_dir / "coffee.jpg").convert("RGB"))
    records = [(b"00000000_raw", _raw_datum(rgb)), (b"00000001_png", _encoded_datum(other)),
               (b"00000002_junk", b"\xff\xfe not a datum"),
               (b"00000003_float", pb.Datum(channels=1, height=2, width=2, float_data=[1, 2, 3, 4]).SerializeToString()),
               (b"00000004_short", pb.Datum(channels=3, height=100, width=100, data=b"\x00" * 10).SerializeToString()),
               (b"00000005_cut", _encoded_datum(rgb, "JPEG")[:200])]
    src = _lmdb(tmp_path / "train_lmdb", records)
    count, skipped = prepare(src, str(tmp_path / "s.h5"), progress=False, workers=1)
    reasons = dict(skipped)
    assert count == 2 and set(reasons) == {"00000002_junk", "00000003_float", "00000004_short", "00000005_cut"}
    assert reasons["00000003_float"] == "float_data Datum (expected uint8 pixels)"
    assert reasons["00000004_short"] == "Datum declares 3x100x100 but holds 10 bytes"
    store = ImageStore(str(tmp_path / "s.h5"))
    assert np.abs(store.read([0])[0].astype(int) - _fork_form(rgb)).max() <= 1
    # the same pixels from a folder give the same store rows (raw planes are B, G, R)
    (tmp_path / "f").mkdir()
    Image.fromarray(rgb).save(tmp_path / "f" / "a.png")
    prepare(str(tmp_path / "f"), str(tmp_path / "f.h5"), progress=False, workers=1)
    assert np.array_equal(ImageStore(str(tmp_path / "f.h5")).read([0])[0], store.read([0])[0])


def test_an_lmdb_that_is_not_caffes_is_one_line_exit_2(tmp_path):
    src = _lmdb(tmp_path / "kv", [(b"a", b"hello world"), (b"b", b"x")])
    with pytest.raises(UserError, match="not a Caffe LMDB"):
        prepare(src, str(tmp_path / "s.h5"), progress=False)
    r = subprocess.run([sys.executable, "-m", "jigsaw.cli", "prepare", src, "-o", str(tmp_path / "s.h5")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and src in r.stderr and "not a Caffe LMDB" in r.stderr
    assert not os.path.exists(tmp_path / "s.h5")


def test_a_recipe_refuses_a_store_of_the_wrong_layout(tmp_path, photo_store, photo_store_square):
    check_layout(open_images(photo_store), recipe("jps"), photo_store)
    check_layout(open_images(photo_store_square), recipe("paper"), photo_store_square)
    with pytest.raises(UserError, match="a 'square' store, but recipe 'jps' reads the 'jps' layout"):
        check_layout(open_images(photo_store_square), recipe("jps"), photo_store_square)
    with pytest.raises(UserError, match="a 'jps' store, but recipe 'bbrattoli'"):
        check_layout(open_images(photo_store), recipe("bbrattoli"), photo_store)


def test_a_store_from_before_layouts_is_square(tmp_path):
    legacy = str(tmp_path / "old.h5")
    with h5py.File(legacy, "w") as f:  # what `prepare` wrote before layouts were recorded
        f.create_dataset("images", data=np.zeros((2, 256, 256, 3), np.uint8), chunks=(1, 256, 256, 3))
    assert ImageStore(legacy).layout == "square"
    check_layout(ImageStore(legacy), recipe("paper"), legacy)
    with pytest.raises(UserError, match="a 'square' store, but recipe 'jps'"):
        check_layout(ImageStore(legacy), recipe("jps"), legacy)


def test_a_file_that_is_not_an_lmdb_is_one_line(tmp_path):
    bad = tmp_path / "bad_lmdb"
    bad.mkdir()
    (bad / "data.mdb").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match="not a readable LMDB"):
        prepare(str(bad), str(tmp_path / "s.h5"), progress=False)
    with pytest.raises(UserError, match="a Caffe LMDB; run `jigsaw prepare"):
        open_images(str(bad))


@pytest.mark.parametrize("args,expect", [
    (["--recipe", "jsp"], "unknown recipe 'jsp'; did you mean 'jps'? (known: bbrattoli, jps, jps++, paper)"),
    (["--recipe", "jps"], "a 'square' store, but recipe 'jps' reads the 'jps' layout"),
    (["--recipe", "jps", "--gray-prob", "0.5"], "--gray-prob applies to the paper and bbrattoli recipes"),
])
def test_train_refuses_bad_recipes_with_one_line(tmp_path, photo_store_square, args, expect):
    from jigsaw.permutations import make_permutations, save_permutations
    perms = str(tmp_path / "p.npy")
    save_permutations(perms, make_permutations(4))
    r = subprocess.run([sys.executable, "-m", "jigsaw.cli", "train", "--data", photo_store_square,
                        "--permutations", perms, "--out", str(tmp_path / "run"), "--no-progress", *args],
                       capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and expect in r.stderr, r.stderr
