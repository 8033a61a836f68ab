"""Folder decoding through torchvision.io (the GPU's nvJPEG path, run here on the CPU with the same code)
against the PIL path that `prepare` and FolderImages use."""
import numpy as np
import pytest
import torch
from PIL import Image

from jigsaw.cli import main
from jigsaw.device_decode import DeviceJpegImages
from jigsaw.images import load_image
from jigsaw.store import FolderImages, open_images

pytestmark = pytest.mark.needs_torchvision  # torchvision.io decodes here


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory, photo_dir):
    """The photographs plus a PNG, a truncated JPEG and a JPEG too small to use."""
    root = tmp_path_factory.mktemp("mixed")
    for p in sorted(photo_dir.rglob("*.jpg"))[:4]:
        (root / p.name).write_bytes(p.read_bytes())
    first = sorted(root.glob("*.jpg"))[0]
    Image.open(first).rotate(90).save(root / "rotated.png")
    (root / "truncated.jpg").write_bytes(first.read_bytes()[:2000])
    Image.new("RGB", (40, 30), (200, 10, 10)).save(root / "tiny.jpg")
    return root


def test_photographs_decode_within_one_grey_level_of_pil(photo_dir):
    ours, pil = DeviceJpegImages(str(photo_dir), 256, "cpu"), FolderImages(str(photo_dir), 256)
    idx = list(range(len(ours)))
    a, b = ours.read(idx), pil.read(idx)
    assert a.shape == (len(idx), 256, 256, 3) and a.dtype == torch.uint8
    diff = (a.numpy().astype(int) - b.astype(int)).__abs__()
    # same libjpeg-turbo decode; only the antialiased resize's rounding differs
    assert diff.max() <= 2 and diff.mean() < 0.05, (diff.max(), diff.mean())


def test_other_formats_bad_and_tiny_files_follow_the_pil_path(mixed_dir):
    # 256 px from 512 px photographs: PIL decodes at full resolution (its draft mode starts at 4x)
    ours, pil = DeviceJpegImages(str(mixed_dir), 256, "cpu"), FolderImages(str(mixed_dir), 256)
    idx = list(range(len(ours)))
    a, b = ours.read(idx).numpy(), pil.read(idx)
    files = ours.files
    png = files.index("rotated.png")
    assert np.array_equal(a[png], load_image(str(mixed_dir / "rotated.png"), 256))
    for name in ("truncated.jpg", "tiny.jpg"):  # unusable: black, as FolderImages gives
        k = files.index(name)
        assert not a[k].any() and not b[k].any(), name
    good = [k for k, f in enumerate(files) if f.endswith(".jpg") and f not in ("truncated.jpg", "tiny.jpg")]
    assert len(good) == 4 and all(np.abs(a[k].astype(int) - b[k].astype(int)).max() <= 2 for k in good)


def test_headers_over_the_bomb_limit_never_reach_the_device_decoder(photo_dir, monkeypatch):
    import torchvision.io as tvio
    calls = []
    real = tvio.decode_jpeg
    monkeypatch.setattr(tvio, "decode_jpeg", lambda data, **kw: calls.append(data) or real(data, **kw))
    ours = DeviceJpegImages(str(photo_dir), 64, "cpu")
    ours.read([0])
    assert calls  # a photograph goes to the device decoder ...
    calls.clear()
    with Image.open(photo_dir / ours.files[0]) as im:
        pixels = im.size[0] * im.size[1]
    for limit in (pixels * 3 // 4, pixels // 4):  # ... until its header counts as a bomb (PIL warns
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)  # above 1x the limit, refuses above 2x)
        got = ours.read([0])
        assert not calls and not got.any()  # refused from the header alone, black as on PIL's path


def test_open_images_chooses_the_reader_and_refuses_unknown_decoders(photo_dir):
    assert isinstance(open_images(str(photo_dir), decode="device"), DeviceJpegImages)
    assert isinstance(open_images(str(photo_dir)), FolderImages)
    with pytest.raises(Exception, match="decode 'gpu'"):
        open_images(str(photo_dir), decode="gpu")


def test_training_reads_a_folder_through_the_device_decoder(tmp_path, photo_dir):
    from jigsaw.permutations import make_permutations, save_permutations
    perms = str(tmp_path / "p.npy")
    save_permutations(perms, make_permutations(4))
    code = main(["train", "--data", str(photo_dir), "--permutations", perms, "--out", str(tmp_path / "run"),
                 "--decode", "device", "--batch-size", "4", "--width", "0.125", "--max-iter", "2",
                 "--test-interval", "0", "--val-fraction", "0.25", "--no-progress", "--device", "cpu"])
    assert code in (0, None) and (tmp_path / "run" / "last.pt").exists()
