"""Hostile files and folders (issue 15): nothing outside a dataset's root is read, only regular files are
images (a FIFO never blocks a reader), and malformed tables are one line."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from jigsaw.caffe_form import caffe_blobs, from_caffe
from jigsaw.images import decode, list_images
from tools.run.errors import UserError
from transfer.datasets import load_cub200

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _png(path, side=80):
    Image.fromarray(np.full((side, side, 3), 120, np.uint8)).save(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_like_an_image_is_not_read(tmp_path):
    _png(tmp_path / "a.png")
    os.mkfifo(tmp_path / "pipe.jpg")
    assert list_images(str(tmp_path)) == ["a.png"]
    done = threading.Event()
    result = {}

    def read():  # if decode opened the FIFO it would block here, and the event would never fire
        try:
            decode(str(tmp_path / "pipe.jpg"))
        except Exception as e:  # noqa: BLE001 - the reason is what we check
            result["error"] = str(e)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(60) and "not a regular file" in result["error"]


def test_a_list_file_stays_inside_its_folder(tmp_path):
    (tmp_path / "src").mkdir()
    _png(tmp_path / "src" / "a.png")
    _png(tmp_path / "outside.png")
    (tmp_path / "list.txt").write_text("a.png 0\n../outside.png 1\n")
    with pytest.raises(UserError, match=r"list.txt:2: '../outside.png' leads outside"):
        list_images(str(tmp_path / "src"), str(tmp_path / "list.txt"))
    (tmp_path / "abs.txt").write_text(f"{tmp_path / 'outside.png'}\n")
    with pytest.raises(UserError, match="absolute path"):
        list_images(str(tmp_path / "src"), str(tmp_path / "abs.txt"))
    r = subprocess.run([sys.executable, "-m", "jigsaw.cli", "prepare", str(tmp_path / "src"), "-o",
                        str(tmp_path / "s.h5"), "--list", str(tmp_path)], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 2 and "is a folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _cub(tmp_path, images, labels="1 1\n", classes="1 bird\n"):
    base = tmp_path / "CUB_200_2011"
    (base / "images").mkdir(parents=True)
    (base / "images.txt").write_text(images)
    (base / "image_class_labels.txt").write_text(labels)
    (base / "train_test_split.txt").write_text("1 1\n")
    (base / "classes.txt").write_text(classes)
    return tmp_path


@pytest.mark.parametrize("entry,needle", [("../../../etc/passwd", "leads outside"),
                                          ("/etc/shadow", "absolute path")])
def test_cub_tables_cannot_name_files_outside_images(tmp_path, entry, needle):
    with pytest.raises(UserError, match=needle):
        load_cub200(str(_cub(tmp_path, f"1 {entry}\n")))


def test_cub_non_integer_ids_and_empty_tables_are_one_line(tmp_path):
    with pytest.raises(UserError, match="must be integers"):
        load_cub200(str(_cub(tmp_path, "1 a.jpg\n", labels="1 one\n")))
    with pytest.raises(UserError, match="at least one entry"):
        load_cub200(str(_cub(tmp_path / "e", "", classes="")))


def test_images_that_would_blow_memory_up_are_refused_from_their_header(tmp_path):
    from jigsaw.images import BadImage
    Image.new("L", (64 * 20, 64)).save(tmp_path / "sliver.png")  # small file, huge after resizing
    with pytest.raises(BadImage, match="sliver"):
        decode(str(tmp_path / "sliver.png"))
    big = tmp_path / "big.png"
    Image.new("L", (9000, 8000)).save(big)  # 72M pixels: over the limit, refused before decoding
    with pytest.raises(BadImage, match="huge"):
        decode(str(big))
    from transfer.data import _load
    from transfer.datasets import DatasetError
    with pytest.raises(DatasetError, match=r"huge \(9000x8000, over"):
        _load(str(big), 1, 28)


def test_hdf5_files_that_read_elsewhere_or_lie_about_their_size(tmp_path):
    import h5py

    from jigsaw.permutations import load_permutations
    from jigsaw.store import ImageStore
    from tools.caffe.caffemodel import read_caffemodel
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(9)) * 8)
    with h5py.File(tmp_path / "ext.h5", "w") as f:  # a dataset whose bytes live in another file
        f.create_dataset("permutations", shape=(8, 9), dtype="u1", external=[(str(secret), 0, 72)])
    with pytest.raises(UserError, match="outside this file") as e:
        load_permutations(str(tmp_path / "ext.h5"))
    assert "0, 1, 2" not in str(e.value)  # nothing of the other file is echoed
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("permutations", data=np.tile(np.arange(9), (2, 1)))
    with h5py.File(tmp_path / "link.h5", "w") as f:
        f["permutations"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/permutations")
    with pytest.raises(UserError, match="link to elsewhere"):
        load_permutations(str(tmp_path / "link.h5"))
    with h5py.File(tmp_path / "store.h5", "w") as f:  # a few KB declaring 8 images of 15000x15000
        f.create_dataset("images", shape=(8, 15000, 15000, 3), dtype="u1", chunks=(1, 64, 64, 3))
    with pytest.raises(UserError, match="declares"):
        ImageStore(str(tmp_path / "store.h5"))
    with h5py.File(tmp_path / "w.caffemodel.h5", "w") as f:
        f.create_dataset("data", data=np.zeros(3))
    with pytest.raises(UserError, match="is not a group"):
        read_caffemodel(str(tmp_path / "w.caffemodel.h5"))


def test_forged_npy_header_and_empty_permutation_sets(tmp_path):
    import struct

    from jigsaw.permutations import load_permutations
    header = "{'descr': '<i8', 'fortran_order': False, 'shape': (40000000, 9), }"
    header += " " * (118 - len(header)) + "\n"
    (tmp_path / "p.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64)
    with pytest.raises(UserError, match="header declares shape"):
        load_permutations(str(tmp_path / "p.npy"))
    np.save(tmp_path / "empty.npy", np.zeros((0, 9), np.int64))
    with pytest.raises(UserError, match="holds no permutations"):
        load_permutations(str(tmp_path / "empty.npy"))


def test_prepare_into_a_folder_is_one_line_before_any_work(tmp_path):
    (tmp_path / "src").mkdir()
    _png(tmp_path / "src" / "a.png")
    (tmp_path / "out").mkdir()
    r = subprocess.run([sys.executable, "-m", "jigsaw.cli", "prepare", str(tmp_path / "src"), "-o", str(tmp_path / "out"),
                        "--workers", "1"], capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 2 and "is a folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("layer,shape", [("conv1", (2 ** 31, 0, 11, 11)), ("conv5", (0, 48, 3, 3)), ("fc8", ())])
def test_cfn_caffemodels_with_impossible_shapes_are_one_line(tmp_path, layer, shape):
    from jigsaw.caffe_form import cfn_prototxt
    from jigsaw.cfn import CFN
    from tools.caffe.caffemodel import write_caffemodel
    from tools.caffe.prototxt import read_net
    m = CFN(10, 0.125)
    blobs = caffe_blobs(m)
    names = [f"{layer}_s{i}" for i in range(1, 10)] if layer != "fc8" else ["fc8"]
    bias = np.zeros(shape[0] if shape and shape[0] < 2 ** 20 else 0, np.float32)
    blobs.update({n: [np.zeros(shape, np.float32), bias] for n in names})
    write_caffemodel(str(tmp_path / "w.caffemodel"), read_net(cfn_prototxt(m.widths, 10, "deploy")), blobs)
    with pytest.raises(UserError, match=f"layer '{layer}' weight blob has shape"):
        from_caffe(None, str(tmp_path / "w.caffemodel"))


@pytest.mark.parametrize("body,needle", [
    ('type: "Flatten" bottom: "data" top: "f" flatten_param { axis: 3 end_axis: 1 }', "comes after end_axis"),
    ('type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 dim: -1 } }',
     "which a 4-D blob does not have"),
    ('type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 weight_filler { '
     'type: "uniform" min: nan max: 1 } }', "expected a finite number"),
    ('type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 weight_filler { '
     'type: "uniform" min: 2 max: 1 } }', "is above max"),
    ('type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 weight_filler { '
     'type: "gaussian" std: -1 } }', "is negative"),
])
def test_nets_caffe_would_refuse_are_one_line(body, needle):
    from tools import load_caffe_net
    text = ('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 4 } } }\n'
            f'layer {{ name: "L" {body} }}')
    with pytest.raises(UserError, match=needle):
        load_caffe_net(text, seed=0)


@pytest.mark.parametrize("name", ["layer", "report", "training", "_modules", "forward", "plan"])
def test_layer_names_that_are_module_attributes(name):
    import torch

    from tools import load_caffe_net
    net = load_caffe_net('layer { name: "in" type: "Input" top: "d" input_param { shape { dim: 1 dim: 2 } } }\n'
                         f'layer {{ name: "{name}" type: "ReLU" bottom: "d" top: "a" }}')
    assert net.layer(name).layer_name == name and net(torch.tensor([[-1.0, 2.0]]))["a"].tolist() == [[0, 2]]


@pytest.mark.parametrize("spec", ["10,dropout:abc", "dropout:1.5", "0", "10,relu6"])
def test_bad_head_specs_are_one_line(spec):
    from transfer.model import make_head
    with pytest.raises(UserError, match="head spec"):
        make_head(spec, 8, 3, 0)


def test_malformed_idx_and_cifar_files_are_one_line(tmp_path):
    import pickle
    import struct

    from transfer.cifar import load_cifar100
    from transfer.datasets import read_idx
    (tmp_path / "zero-dims-idx3-ubyte").write_bytes(struct.pack(">I", 0x00000800))
    with pytest.raises(UserError, match="bad idx header"):
        read_idx(str(tmp_path / "zero-dims-idx3-ubyte"))
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    for name in ("meta", "train", "test"):
        (base / name).write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(UserError, match="not CIFAR-100's meta"):
        load_cifar100(str(tmp_path))
    (base / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"a", b"b"]}))
    with pytest.raises(UserError, match=r"'data' must be an \(N, 3072\) uint8 array"):
        load_cifar100(str(tmp_path))


@pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that takes non-UTF-8 names")
def test_a_non_utf8_file_name_is_prepared_not_fatal(tmp_path):
    import h5py

    from jigsaw.store import prepare
    src = tmp_path / "src"
    src.mkdir()
    _png(src / "ok.png")
    _png(os.path.join(os.fsencode(src), b"bad\xff.png").decode("utf-8", "surrogateescape"))
    count, skipped = prepare(str(src), str(tmp_path / "s.h5"), size=64, workers=1, layout="square", progress=False)
    assert count == 2 and not skipped
    with h5py.File(tmp_path / "s.h5") as f:
        assert sorted(f["paths"][()]) == [b"bad\\xff.png", b"ok.png"]


def test_only_the_projects_image_formats_are_decoded(tmp_path, monkeypatch):
    """An EPS (or any format PIL could hand to an outside program) named .jpg is 'not an image': PIL never
    gets to its plugin. Every reader goes through tools.run.images.open_image with FORMATS."""
    import PIL.EpsImagePlugin
    from jigsaw.images import BadImage, decode
    from tools.run.errors import ImageRefused
    from tools.run.images import read_image

    def reached(*args, **kwargs):
        raise AssertionError("PIL's EPS plugin was asked to open a user's file")
    monkeypatch.setattr(PIL.EpsImagePlugin.EpsImageFile, "_open", reached)
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")
    with pytest.raises(BadImage, match="not an image"):
        decode(str(eps))
    with pytest.raises(ImageRefused, match="not an image"):
        read_image(str(eps))


def test_a_compressed_hdf5_dataset_declaring_more_than_it_could_hold_is_refused_unread(tmp_path):  # issue 26 §1
    """gzip tops out near 1032:1 and unwritten chunks store nothing: a 2^33 x 9 dataset in a 1 KB file is
    refused before anything is allocated, for permutations and caffemodel.h5 alike."""
    import h5py
    from jigsaw.permutations import load_permutations
    from tools.caffe.caffemodel import read_caffemodel
    from tools.run.errors import UserError
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f.create_dataset("permutations", shape=(2 ** 33, 9), dtype="int64", chunks=(1024, 9), compression="gzip")
    with h5py.File(tmp_path / "w.caffemodel.h5", "w") as f:
        f.create_dataset("data/ip/0", shape=(2 ** 31, 64), dtype="float32", chunks=(1024, 64), compression="lzf")
    with pytest.raises(UserError, match=r"declares 618475290624 bytes from 0 stored"):
        load_permutations(str(tmp_path / "p.h5"))
    with pytest.raises(UserError, match="declares .* bytes from 0 stored"):
        read_caffemodel(str(tmp_path / "w.caffemodel.h5"))
