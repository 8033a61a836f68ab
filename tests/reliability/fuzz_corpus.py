"""The files the corruption fuzzer mutates, each written by the tests in its real format, and the project's
reader of each: READERS[name] = Reader(make the seed, the files in it to damage, read it, memory allowance)."""
import io
import json
import os
from dataclasses import dataclass
from typing import Callable, Tuple

import numpy as np

from tests.reliability.fuzz_trunks import has_torchvision, read_backbone, trunk_checkpoint, vissl_checkpoint

MiB = 1 << 20


@dataclass(frozen=True)
class Reader:
    make: Callable[[str], Tuple[str, Tuple[str, ...]]]  # make(folder) -> (root, the files under root to damage)
    read: Callable[[str], object]  # read(root) with the project's reader: returns, or raises UserError
    text: bool = False  # mutate as text too (numbers, lines)
    allowance: int = 192 * MiB  # fixed memory allowance over k x the file's size
    gz_inner: bool = False  # .gz files: also damage the content and compress it again
    torch_free: bool = True  # reads without importing torch: a campaign of such readers forks 5x faster


def _rng():
    return np.random.default_rng(0)


def _image_rgb(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 4 % 256, y * 5 % 256, (x + y) * 3 % 256], -1)
    return (base + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)


# --- datasets -------------------------------------------------------------------------------------------------

def _idx(folder, gz):
    from tests.transfer.test_datasets import mnist_like
    root = mnist_like(os.path.join(folder, "fm"), n=(24, 8), gz=gz)
    return root, tuple(sorted(os.listdir(root)))


def _read_idx_dataset(root):
    from transfer.datasets import load_dataset
    d = load_dataset("fashion-mnist", root, val_fraction=0.2)
    return sum(len(s) for s in d.values())


def _cifar(folder):
    from tests.transfer.test_datasets import cifar_fixture
    cifar_fixture(folder)
    return folder, tuple(os.path.join("cifar-100-python", n) for n in ("meta", "train", "test"))


def _read_cifar(root):
    from transfer.datasets import load_dataset
    return len(load_dataset("cifar100", root, val_fraction=0.1)["train"])


def _cub(folder):
    from tests.transfer.test_datasets import cub_fixture
    cub_fixture(folder)
    return folder, tuple(os.path.join("CUB_200_2011", n) for n in
                         ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt"))


def _cub_lists(folder):
    from tests.transfer.test_datasets import _image
    base = os.path.join(folder, "cub")
    for split, ids in (("train", range(6)), ("test", range(6, 9))):
        rows = []
        for i in ids:
            rel = f"{1 + i % 2:03d}.Bird/img_{i}.jpg"
            _image(os.path.join(base, "images", rel))
            rows.append(f"{rel} {i % 2}")
        with open(os.path.join(base, f"{split}.txt"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return base, ("train.txt", "test.txt")


def _read_cub(root):
    from transfer.datasets import load_dataset
    return len(load_dataset("cub200", root, val_fraction=0.2)["train"])


def _voc(folder):
    from tests.transfer.test_voc07 import voc_like
    voc_like(folder, size=16)
    main = os.path.join("VOC2007", "ImageSets", "Main")
    return folder, tuple(os.path.join(main, f) for f in ("aeroplane_trainval.txt", "dog_trainval.txt",
                                                          "tvmonitor_test.txt", "person_test.txt"))


def _read_voc(root):
    from transfer.datasets import load_dataset
    return len(load_dataset("voc2007", root, val_fraction=0.2)["train"])


# --- permutations ---------------------------------------------------------------------------------------------

def _perms(ext):
    def make(folder):
        from jigsaw.permutations import make_permutations, save_permutations
        save_permutations(os.path.join(folder, "p" + ext), make_permutations(30, seed=1))
        return folder, ("p" + ext,)
    return make


def _read_perms(ext):
    def read(root):
        from jigsaw.permutations import load_permutations
        return load_permutations(os.path.join(root, "p" + ext)).shape
    return read


# --- Caffe files ----------------------------------------------------------------------------------------------

NET_TEXT = '''name: "fuzz"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 2 } convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''

SOLVER_TEXT = '''net: "train_val.prototxt"
test_iter: 10
test_interval: 100
base_lr: 0.01
lr_policy: "step"
gamma: 0.1
stepsize: 1000
display: 20
max_iter: 3000
momentum: 0.9
weight_decay: 0.0005
snapshot: 1000
snapshot_prefix: "cfn"
solver_mode: GPU
'''


def _blobs():
    rng = _rng()
    return {"conv1": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), np.zeros(4, np.float32)],
            "fc": [rng.standard_normal((5, 36)).astype(np.float32), np.zeros(5, np.float32)]}


def _prototxt(folder):
    with open(os.path.join(folder, "net.prototxt"), "w") as f:
        f.write(NET_TEXT)
    return folder, ("net.prototxt",)


def _read_prototxt(root):
    from tools.caffe.net import CaffeNet
    from tools.caffe.prototxt import read_net
    return len(CaffeNet(read_net(os.path.join(root, "net.prototxt"), phase="TEST"), device="meta").plan)


def _solver(folder):
    with open(os.path.join(folder, "solver.prototxt"), "w") as f:
        f.write(SOLVER_TEXT)
    return folder, ("solver.prototxt",)


def _read_solver(root):
    from tools.caffe.prototxt import read_solver
    from tools.caffe.solver import check_solver, learning_rate
    sp = read_solver(os.path.join(root, "solver.prototxt"))
    check_solver(sp)
    return learning_rate(sp, 1500)


def _caffemodel(h5):
    def make(folder):
        from tools.caffe.caffemodel import write_caffemodel
        from tools.caffe.prototxt import read_net
        with open(os.path.join(folder, "net.prototxt"), "w") as f:
            f.write(NET_TEXT)
        name = "m.caffemodel.h5" if h5 else "m.caffemodel"
        if h5:
            import h5py
            with h5py.File(os.path.join(folder, name), "w") as f:
                for layer, arrays in _blobs().items():
                    for k, a in enumerate(arrays):
                        f[f"data/{layer}/{k}"] = a
        else:
            write_caffemodel(os.path.join(folder, name), read_net(NET_TEXT), _blobs())
        return folder, (name,)
    return make


def _read_caffemodel(name):
    def read(root):
        from tools.caffe.caffemodel import read_caffemodel
        _, named = read_caffemodel(os.path.join(root, name))
        with np.errstate(all="ignore"):  # flipped bits make NaNs: touching every payload must still be safe
            return sum(float(np.asarray(b.data).sum()) for _, blobs in named for b in blobs)
    return read


def _read_weights_into_net(root):
    from tools.caffe.net import load_caffe_net
    net = load_caffe_net(os.path.join(root, "net.prototxt"), os.path.join(root, "m.caffemodel"))
    return len(net.report.loaded)


def _mean(folder):
    from tools.caffe import caffe_pb2 as pb
    mean = _rng().uniform(0, 255, (3, 8, 8)).astype(np.float32)
    with open(os.path.join(folder, "mean.binaryproto"), "wb") as f:
        f.write(pb.BlobProto(shape=pb.BlobShape(dim=list(mean.shape)), data=mean.ravel().tolist()).SerializeToString())
    return folder, ("mean.binaryproto",)


def _read_mean(root):
    from tools.caffe.preprocess import read_binaryproto
    return read_binaryproto(os.path.join(root, "mean.binaryproto")).shape


def _lmdb(folder):
    import lmdb
    from PIL import Image
    from tools.caffe import caffe_pb2 as pb
    path = os.path.join(folder, "db")
    env = lmdb.open(path, map_size=1 << 22)
    with env.begin(write=True) as txn:
        for k in range(4):
            rgb = _image_rgb(40, 48, k)
            if k % 2:
                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, "PNG")
                value = pb.Datum(data=buf.getvalue(), encoded=True, label=k)
            else:
                planes = np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))
                value = pb.Datum(channels=3, height=40, width=48, data=planes.tobytes(), label=k)
            txn.put(f"{k:08d}".encode(), value.SerializeToString())
    env.close()
    return path, ("data.mdb",)


def _read_lmdb(root):
    from jigsaw.images import BadImage
    from jigsaw.lmdb_source import LmdbRecords, datum_image
    records, good = LmdbRecords(root), 0
    for _, value in records.values():
        try:
            datum_image(value, 16)
            good += 1
        except BadImage:  # `jigsaw prepare` lists such a record as skipped and goes on
            pass
    return good


# --- images, stores, checkpoints, settings, records -------------------------------------------------------------

def _picture(fmt, ext):
    def make(folder):
        from PIL import Image
        Image.fromarray(_image_rgb()).save(os.path.join(folder, "im" + ext), fmt)
        return folder, ("im" + ext,)
    return make


def _read_picture(ext):
    def read(root):
        from tools.run.images import read_image
        return read_image(os.path.join(root, "im" + ext)).shape
    return read


def _store(folder):
    from PIL import Image
    from jigsaw.store import prepare
    photos = os.path.join(folder, "photos")
    os.makedirs(photos)
    for k in range(3):
        Image.fromarray(_image_rgb(80, 96, k)).save(os.path.join(photos, f"{k}.png"))
    prepare(photos, os.path.join(folder, "s.h5"), size=64, progress=False, workers=1, layout="square",
            min_side=16)
    return folder, ("s.h5",)


def _read_store(root):
    from jigsaw.store import ImageStore, fingerprint
    store = ImageStore(os.path.join(root, "s.h5"))
    return fingerprint(store), store.read(np.arange(len(store))).shape


def _checkpoint(folder):
    from jigsaw.checkpoint import cfn_payload
    from jigsaw.cfn import CFN
    from jigsaw.permutations import make_permutations
    from tools.run.checkpoint import save_checkpoint
    model = CFN(4, width=0.0625, seed=0)
    save_checkpoint(os.path.join(folder, "last.pt"), cfn_payload(model, make_permutations(4, seed=0),
                                                                 dict(recipe="jps", recipe_options={}), 7))
    return folder, ("last.pt",)


def _read_checkpoint(root):
    from jigsaw.checkpoint import read_cfn
    model, perms, _, _ = read_cfn(os.path.join(root, "last.pt"))
    return perms.shape, model.num_permutations


def _settings(ext):
    def make(folder):
        settings = dict(seed=3, batch_size=16, max_iter=50, recipe="jps", val_fraction=0.1, width=0.5,
                        data=None, dropout=0.5)
        text = json.dumps(settings, indent=1) if ext == ".json" else \
            "".join(f"{k}: {'null' if v is None else str(v).lower() if isinstance(v, bool) else v}\n"
                    for k, v in settings.items())
        with open(os.path.join(folder, "s" + ext), "w") as f:
            f.write(text)
        return folder, ("s" + ext,)
    return make


def _read_settings(ext):
    def read(root):
        from jigsaw.config import TrainConfig
        from tools.run.settings import read_settings
        return read_settings(os.path.join(root, "s" + ext), TrainConfig, extras=("out",))
    return read


def _record(folder):
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(dict(seed=1, epochs=3, dataset="cifar100", model="cfn", lr=[0.01, 0.001]), f)
    return folder, ("config.json",)


def _read_record(root):
    from tools.run.runrecord import read_record
    return read_record(root, None)


READERS = {
    "idx-gz": Reader(lambda d: _idx(d, True), _read_idx_dataset, gz_inner=True),
    "idx-raw": Reader(lambda d: _idx(d, False), _read_idx_dataset),
    "cifar-pickle": Reader(_cifar, _read_cifar),
    "cub-tables": Reader(_cub, _read_cub, text=True),
    "cub-train-test-lists": Reader(_cub_lists, _read_cub, text=True),
    "voc-lists": Reader(_voc, _read_voc, text=True),
    "permutations-npy": Reader(_perms(".npy"), _read_perms(".npy")),
    "permutations-bin": Reader(_perms(".bin"), _read_perms(".bin")),
    "permutations-h5": Reader(_perms(".h5"), _read_perms(".h5")),
    "prototxt": Reader(_prototxt, _read_prototxt, text=True, torch_free=False),
    "solver": Reader(_solver, _read_solver, text=True, torch_free=False),
    "caffemodel": Reader(_caffemodel(False), _read_caffemodel("m.caffemodel")),
    "caffemodel-h5": Reader(_caffemodel(True), _read_caffemodel("m.caffemodel.h5")),
    "weights-into-net": Reader(_caffemodel(False), _read_weights_into_net, torch_free=False),
    "mean-binaryproto": Reader(_mean, _read_mean),
    "lmdb": Reader(_lmdb, _read_lmdb, torch_free=False),
    # an image may be as large as MAX_PIXELS says (8k x 8k): its decoded size is the documented bound
    "jpeg": Reader(_picture("JPEG", ".jpg"), _read_picture(".jpg"), allowance=1280 * MiB),
    "png": Reader(_picture("PNG", ".png"), _read_picture(".png"), allowance=1280 * MiB),
    "store": Reader(_store, _read_store, torch_free=False),
    "checkpoint": Reader(_checkpoint, _read_checkpoint, torch_free=False),
    "settings-json": Reader(_settings(".json"), _read_settings(".json"), text=True),
    "settings-yaml": Reader(_settings(".yaml"), _read_settings(".yaml"), text=True),
    "run-record": Reader(_record, _read_record, text=True),
}
if has_torchvision():  # torchvision trunks: where torchvision loads beside this torch
    READERS.update({
        "trunk-checkpoint": Reader(trunk_checkpoint, read_backbone("last.pt", "resnet18"), torch_free=False,
                                   allowance=768 * MiB),
        "vissl-checkpoint": Reader(vissl_checkpoint, read_backbone("model.pth", "resnet18"), torch_free=False,
                                   allowance=768 * MiB),
    })
