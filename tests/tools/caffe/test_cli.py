"""caffe-convert end to end: both directions, the summary, and bad input (exit 2, one line, no output)."""
import os
import subprocess
import sys

import pytest
import torch

from tools import load_caffe_net
from tools.caffe.cli import main

from .helpers import input_layer, write_random_net

NET = input_layer({"data": (1, 3, 16, 16)}) + '''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
'''
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "tools.caffe.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env)


def test_convert_summary_and_back(tmp_path):
    proto, model, net = write_random_net(tmp_path, NET)
    r = cli(proto, model, "--summary", "-o", tmp_path / "m.pt")
    assert r.returncode == 0, r.stderr
    assert "pool1 (Pooling)" in r.stdout and "(1, 4, 7, 7)" in r.stdout and "Total params: 1,097" in r.stdout
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    assert torch.equal(payload["state_dict"]["conv1.weight"], net.layer("conv1").weight)
    r = cli(tmp_path / "m.pt", "-o", tmp_path / "back")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back.caffemodel").read_bytes() == open(model, "rb").read()
    back = load_caffe_net(str(tmp_path / "back.prototxt"), str(tmp_path / "back.caffemodel"))
    x = torch.randn(1, 3, 16, 16)
    assert torch.equal(back(x)["fc"], net(x)["fc"])


def _bad(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


@pytest.mark.parametrize("case", ["truncated", "not_protobuf", "syntax", "unknown_type", "shape_mismatch",
                                  "missing_bottom", "missing_file", "pickle_pt", "nothing_to_do", "huge_tile",
                                  "huge_tile_summary"])
def test_bad_input_exits_2_with_one_line(tmp_path, case, capsys):
    proto, model, _ = write_random_net(tmp_path, NET)
    out = tmp_path / "out.pt"
    raw = open(model, "rb").read()
    args = {
        "truncated": [proto, _bad(tmp_path, "t.caffemodel", raw[:len(raw) // 3])],
        "not_protobuf": [proto, _bad(tmp_path, "r.caffemodel", os.urandom(4000))],
        "syntax": [_bad(tmp_path, "s.prototxt", NET.replace("num_output: 5 }", "num_output: 5"))],
        "unknown_type": [_bad(tmp_path, "u.prototxt", NET.replace('"Pooling"', '"Pool"'))],
        "shape_mismatch": [_bad(tmp_path, "m.prototxt", NET.replace("num_output: 4", "num_output: 8")), model],
        "missing_bottom": [_bad(tmp_path, "b.prototxt", NET.replace('bottom: "pool1"', 'bottom: "pool2"'))],
        "missing_file": [tmp_path / "absent.prototxt"],
        "pickle_pt": [_bad(tmp_path, "evil.pt", b"")],
        "nothing_to_do": [proto],
        "huge_tile": [_bad(tmp_path, "h.prototxt", NET + 'layer { name: "t" type: "Tile" bottom: "fc" top: "t" '
                           'tile_param { tiles: 2000000000 } }')],
        "huge_tile_summary": [_bad(tmp_path, "h.prototxt", NET + 'layer { name: "t" type: "Tile" bottom: "fc" '
                                   'top: "t" tile_param { tiles: 2000000000 } }'), "--summary"],
    }[case]
    if case == "pickle_pt":
        torch.save({"format": "caffe-convert/1", "net": object()}, args[0])  # a pickled object
    code = main([str(a) for a in args] + ([] if case in ("nothing_to_do", "huge_tile_summary") else ["-o", str(out)]))
    err = capsys.readouterr().err
    assert code == 2, err
    errors = [l for l in err.splitlines() if "error:" in l]
    assert len(errors) == 1 and "Traceback" not in err, err
    if case.startswith("huge_tile"):  # blob.cpp refuses a blob over INT_MAX elements, and so does the builder
        assert "makes top 't' of shape (1, 10000000000), 10,000,000,000 elements: Caffe refuses" in errors[0], err
    if case == "unknown_type":
        assert "type 'Pool', which is not supported; did you mean 'Pooling'?" in errors[0] and len(errors[0]) < 300
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_help_and_wrong_flag(tmp_path):
    r = cli("--help")
    assert r.returncode == 0 and "--summary" in r.stdout and "examples:" in r.stdout
    r = cli(tmp_path / "x.prototxt", "--no-such-flag")
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr and "Traceback" not in r.stderr


VERIFY_NET = '''input: "data" input_shape { dim: 2 dim: 3 dim: 19 dim: 19 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 6 kernel_size: 5 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 K } }
layer { name: "fc" type: "InnerProduct" bottom: "norm1" top: "fc" inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


def test_verify_against_opencv(tmp_path):
    pytest.importorskip("cv2")
    proto, model, _ = write_random_net(tmp_path, VERIFY_NET.replace(" K ", " "))
    r = cli(proto, model, "--verify")
    assert r.returncode == 0, r.stderr
    table = r.stdout
    for layer in ("conv1", "relu1", "pool1", "norm1", "fc", "prob"):
        assert f"\n{layer} " in table
    assert "6 layers agree with OpenCV" in table
    # OpenCV's LRN ignores k (README): a net with k = 2 must fail at norm1, in one line
    proto2, model2, _ = write_random_net(tmp_path, VERIFY_NET.replace(" K ", " k: 2 "), name="k2")
    r = cli(proto2, model2, "--verify")
    assert r.returncode == 2 and "layer 'norm1' (LRN) differs from OpenCV" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "\npool1 " in r.stdout
    # a field our reader does not know is something it skipped: no verdict
    (tmp_path / "odd.prototxt").write_text(VERIFY_NET.replace(" K ", " ").replace(
        'num_output: 4 }', 'num_output: 4 fancy_option: 3 }'))
    r = cli(tmp_path / "odd.prototxt", "--verify")
    assert r.returncode == 2 and "skipped" in r.stderr and "fancy_option" in r.stderr


def test_strict_makes_an_unknown_field_an_error(tmp_path):
    (tmp_path / "odd.prototxt").write_text(NET.replace("num_output: 5 }", "num_output: 5 fancy_option: 3 }"))
    r = cli(tmp_path / "odd.prototxt", "--summary")
    assert r.returncode == 0 and "unknown field 'fancy_option'" in r.stderr
    r = cli(tmp_path / "odd.prototxt", "--summary", "--strict")
    assert r.returncode == 2 and "--strict" in r.stderr and "fancy_option" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
