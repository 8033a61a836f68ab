"""A converted net without this package: torch.export (.pt2) and ONNX (.onnx, run by onnxruntime) files of a
CaffeNet-architecture net give the module's outputs (tolerance 1e-5 relative to the largest output, 1e-6
absolute per value); caffe-convert's .pt rebuilds its module (load_pt); what cannot be exported is one line."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from tools import load_caffe_net, save_caffe_net
from tools.caffe.export import example_inputs, export, load_pt

from .helpers import caffenet_text, input_layer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tools.caffe.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.fixture(scope="module")
def caffenet(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("caffenet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(caffenet_text(0.125), seed=0).eval()
    with torch.no_grad():
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
            net.layer(name).weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    save_caffe_net(net, str(tmp / "deploy.prototxt"), str(tmp / "w.caffemodel"))
    return tmp, net


def _close(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() <= max(1e-6, 1e-5 * np.abs(b).max())


def test_pt2_and_onnx_give_the_modules_outputs(caffenet):
    tmp, net = caffenet
    x = example_inputs(net)["data"] * 50
    with torch.no_grad():
        want = net(x)["prob"].numpy()
    r = cli(tmp / "deploy.prototxt", tmp / "w.caffemodel", "--export", tmp / "c.pt2")
    assert r.returncode == 0, r.stderr
    program = torch.export.load(str(tmp / "c.pt2")).module()
    assert _close(program(x)[0].detach().numpy(), want)
    ort = pytest.importorskip("onnxruntime")
    export(net, str(tmp / "c.onnx"))
    session = ort.InferenceSession(str(tmp / "c.onnx"))
    assert [i.name for i in session.get_inputs()] == ["data"] and [o.name for o in session.get_outputs()] == ["prob"]
    assert _close(session.run(None, {"data": x.numpy()})[0], want)


def test_the_pt_rebuilds_its_module(caffenet, tmp_path):
    tmp, net = caffenet
    assert cli(tmp / "deploy.prototxt", tmp / "w.caffemodel", "-o", tmp_path / "m.pt").returncode == 0
    back = load_pt(str(tmp_path / "m.pt"))
    x = example_inputs(net)["data"]
    with torch.no_grad():
        assert torch.equal(back(x)["prob"], net(x)["prob"])


def test_what_cannot_be_exported_is_one_line(tmp_path):
    pytest.importorskip("onnxscript")
    (tmp_path / "m.prototxt").write_text(
        input_layer({"a": (2, 3, 4, 4), "b": (2, 3, 4, 4)}) +
        'layer { name: "merge" type: "MergeData" bottom: "a" bottom: "b" top: "x" top: "n" '
        "merge_data_param { min_substitute: 0 max_substitute: 1 } }\n")
    r = cli(tmp_path / "m.prototxt", "--export", tmp_path / "m.onnx")
    assert r.returncode == 2 and "cannot export layer 'merge' (MergeData)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "m.onnx").exists()
    r = cli(tmp_path / "m.prototxt", "--export", tmp_path / "m.tflite")
    assert r.returncode == 2 and "expected a .pt2" in r.stderr


def test_export_verify_summary_and_conversion_never_write_through_an_output_layer(tmp_path):
    """A net with HDF5Output names a user's file: tracing it (--export), checking it (--verify), its summary
    and its conversion leave that file byte for byte as it was."""
    import h5py
    from tools.caffe.cli import main
    users = tmp_path / "users_data.h5"
    with h5py.File(users, "w") as f:
        f.create_dataset("data", data=np.arange(6.0))
    before = users.read_bytes()
    text = (input_layer({"data": (2, 3), "label": (2,)})
            + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
            + 'inner_product_param { num_output: 2 } }\n'
            + 'layer { name: "out" type: "HDF5Output" bottom: "ip" bottom: "label" hdf5_output_param { '
            + f'file_name: "{users}" }} }}\n')
    (tmp_path / "n.prototxt").write_text(text)
    net = str(tmp_path / "n.prototxt")
    assert main([net, "-o", str(tmp_path / "m.pt"), "--summary"]) == 0
    assert main([net, "--export", str(tmp_path / "m.pt2")]) == 2  # nothing to return: refused in one line
    assert main([net, "--verify"]) == 2  # OpenCV has no HDF5Output: refused in one line, after our side ran
    text = text.replace('layer { name: "out"', 'layer { name: "keep" type: "Sigmoid" bottom: "ip" top: "s" }\n'
                        'layer { name: "out"')
    (tmp_path / "n.prototxt").write_text(text)
    assert main([net, "--export", str(tmp_path / "m.pt2")]) == 0  # traced with the writer silent
    assert users.read_bytes() == before
    load_caffe_net(net)(data=torch.zeros(2, 3), label=torch.zeros(2))  # a forward pass asked for does write
    assert users.read_bytes() != before
