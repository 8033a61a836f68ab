"""Caffe's preprocessing by hand: mean files, the DataTransformer's TEST transform, and `caffe-convert classify`
(examples/cpp_classification/classification.cpp's steps). Exact equality where Caffe's arithmetic is
exact (integers minus float32 means); 1e-6 on softmax outputs."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from tools.caffe import caffe_pb2 as pb
from tools import load_caffe_net, save_caffe_net
from tools.caffe.classify import classify, top_predictions
from tools.run.errors import CaffeError
from tools.caffe.preprocess import Transform, classification_input, read_binaryproto

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def write_mean(path, mean, legacy=False):
    if legacy:  # compute_image_mean's form: num/channels/height/width
        blob = pb.BlobProto(num=1, channels=mean.shape[0], height=mean.shape[1], width=mean.shape[2],
                            data=mean.ravel().tolist())
    else:
        blob = pb.BlobProto(shape=pb.BlobShape(dim=list(mean.shape)), data=mean.ravel().tolist())
    with open(path, "wb") as f:
        f.write(blob.SerializeToString())


@pytest.mark.parametrize("legacy", [False, True])
def test_read_binaryproto(tmp_path, legacy):
    mean = np.random.default_rng(0).uniform(0, 255, (3, 5, 4)).astype(np.float32)
    write_mean(tmp_path / "m.binaryproto", mean, legacy)
    assert np.array_equal(read_binaryproto(str(tmp_path / "m.binaryproto")), mean)


def test_a_malformed_mean_file_is_one_line(tmp_path):
    (tmp_path / "bad.binaryproto").write_bytes(b"\x0a\xff\xff\xff\x0f" + b"x" * 10)
    with pytest.raises(CaffeError, match="not a .binaryproto mean file"):
        read_binaryproto(str(tmp_path / "bad.binaryproto"))
    blob = pb.BlobProto(shape=pb.BlobShape(dim=[3, 1000, 1000]), data=[1.0, 2.0])  # declares more than it holds
    (tmp_path / "short.binaryproto").write_bytes(blob.SerializeToString())
    with pytest.raises(CaffeError, match="binaryproto"):
        read_binaryproto(str(tmp_path / "short.binaryproto"))


def test_the_data_transformer_by_hand():  # data_transformer.cpp, TEST phase
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (6, 7, 3)).astype(np.uint8)
    mean = rng.uniform(0, 255, (3, 6, 7)).astype(np.float32)
    out = Transform(crop_size=4, mean=mean, scale=0.5)(img)
    h0, w0 = (6 - 4) // 2, (7 - 4) // 2
    want = np.empty((3, 4, 4), np.float32)
    for c in range(3):
        for h in range(4):
            for w in range(4):
                want[c, h, w] = (np.float32(img[h0 + h, w0 + w, c]) - mean[c, h0 + h, w0 + w]) * np.float32(0.5)
    assert np.array_equal(out, want)
    values = Transform(mean_values=(104, 117, 123))(img)
    assert np.array_equal(values, img.transpose(2, 0, 1).astype(np.float32) - np.float32([104, 117, 123])[:, None, None])
    with pytest.raises(CaffeError, match="mean image"):
        Transform(mean=mean[:, :5])(img)


def _tiny_net(tmp_path, n_out=7):
    text = ('input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
            f'layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param {{ num_output: {n_out} }} }}\n'
            'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n')
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(text, seed=0)
    with torch.no_grad():
        net.layer("fc").weight.copy_(torch.randn(n_out, 48, generator=torch.Generator().manual_seed(3)) * 0.02)
    save_caffe_net(net, str(tmp_path / "deploy.prototxt"), str(tmp_path / "w.caffemodel"))
    return net


def test_classify_by_hand(tmp_path):
    net = _tiny_net(tmp_path)
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "img.png")
    mean = rng.uniform(0, 255, (3, 9, 9)).astype(np.float32)  # any size: classification.cpp averages it
    write_mean(tmp_path / "mean.binaryproto", mean)
    # by hand: BGR, float, minus the mean file's per-channel averages, no scaling
    bgr = rgb[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)
    x = bgr - mean.reshape(3, -1).mean(axis=1, dtype=np.float64).astype(np.float32)[:, None, None]
    assert np.array_equal(classification_input(rgb[:, :, ::-1], 3, 4, 4, read_binaryproto(str(tmp_path / "mean.binaryproto"))), x)
    w, b = net.layer("fc").weight.detach().double().numpy(), net.layer("fc").bias.detach().double().numpy()
    logits = w @ x.astype(np.float64).ravel() + b
    prob = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    (path, top), = classify(net, [str(tmp_path / "img.png")], str(tmp_path / "mean.binaryproto"), top=5)
    assert [int(label) for _, label in top] == list(np.argsort(-prob, kind="stable")[:5])
    assert np.allclose([s for s, _ in top], np.sort(prob)[::-1][:5], atol=1e-6)
    # the command line prints what classification.cpp prints
    (tmp_path / "labels.txt").write_text("".join(f"n{i:03d} class {i}\n" for i in range(7)))
    r = subprocess.run([sys.executable, "-m", "tools.caffe.cli", "classify", str(tmp_path / "deploy.prototxt"),
                        str(tmp_path / "w.caffemodel"), str(tmp_path / "img.png"), "--mean",
                        str(tmp_path / "mean.binaryproto"), "--labels", str(tmp_path / "labels.txt")],
                       capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    best = int(np.argmax(prob))
    assert lines[1] == f'{prob[best]:.4f} - "n{best:03d} class {best}"' and len(lines) == 6


def test_top_predictions_break_ties_as_caffe_does():  # std::pair comparison: the larger index first
    assert top_predictions(np.array([0.2, 0.5, 0.5, 0.1]), 3) == [2, 1, 0]


def test_classify_refuses_bad_labels_and_mean(tmp_path):
    _tiny_net(tmp_path)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "img.png")
    (tmp_path / "labels.txt").write_text("a\nb\n")
    (tmp_path / "bad.binaryproto").write_bytes(b"\xff" * 7)
    for extra, needle in ((["--labels", str(tmp_path / "labels.txt")], "2 labels for the net's 7 outputs"),
                          (["--mean", str(tmp_path / "bad.binaryproto")], "not a .binaryproto mean file")):
        r = subprocess.run([sys.executable, "-m", "tools.caffe.cli", "classify", str(tmp_path / "deploy.prototxt"),
                            str(tmp_path / "w.caffemodel"), str(tmp_path / "img.png"), *extra],
                           capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
        assert r.returncode == 2 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_pycaffe_transformer_order_by_hand():  # python/caffe/io.py Transformer.preprocess
    from tools.caffe.preprocess import transformer_input
    rng = np.random.default_rng(5)
    rgb01 = rng.uniform(0, 1, (4, 5, 3)).astype(np.float32)
    mean = np.float32([104, 117, 123])
    out = transformer_input(rgb01, 4, 5, mean=mean, input_scale=0.5)
    want = (rgb01.transpose(2, 0, 1)[[2, 1, 0]] * np.float32(255) - mean[:, None, None]) * np.float32(0.5)
    assert np.array_equal(out, want)
    with pytest.raises(CaffeError, match="channel_swap"):
        transformer_input(rgb01, 4, 5, channel_swap=(0, 0, 1))
