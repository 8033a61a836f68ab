"""Loading weights by layer name: the report, Caffe's shape rules and every bad-input error."""
import warnings

import numpy as np
import pytest
import torch

from tools.caffe import caffe_pb2 as pb
from tools import load_caffe_net, save_caffe_net
from tools.caffe.caffemodel import write_caffemodel
from tools.run.errors import CaffeError, DiskError
from tools.caffe.prototxt import read_net

from .helpers import input_layer, write_random_net

NET = input_layer({"data": (1, 3, 8, 8)}) + '''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 5 } }
'''


def test_report_lists_layers_without_weights_and_weights_without_layers(tmp_path):
    _, model, src = write_random_net(tmp_path, NET.replace('"fc"', '"fc_old"'))
    net = load_caffe_net(NET, str(model))
    assert net.report.loaded == ["conv1"]
    assert ("fc", "weight") in net.report.missing
    assert net.report.unexpected == ["fc_old"]
    assert torch.equal(net.layer("conv1").weight, src.layer("conv1").weight)
    assert "weights without a layer" in str(net.report)


def test_legacy_4d_inner_product_blob_loads(tmp_path):
    net_param = read_net(NET)
    path = tmp_path / "legacy.caffemodel"
    raw = pb.NetParameter()
    v1 = raw.layers.add(name="fc", type=pb.V1LayerParameter.INNER_PRODUCT)
    w = v1.blobs.add(num=1, channels=1, height=5, width=144)
    w.data.extend(np.arange(720, dtype=np.float32))
    b = v1.blobs.add(num=1, channels=1, height=1, width=5)
    b.data.extend([1, 2, 3, 4, 5])
    path.write_bytes(raw.SerializeToString())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(net_param, str(path))
    assert torch.equal(net.layer("fc").weight.reshape(-1), torch.arange(720, dtype=torch.float32))
    assert net.layer("fc").bias.tolist() == [1, 2, 3, 4, 5]


def test_shape_mismatch_names_layer_and_shapes(tmp_path):
    _, model, _ = write_random_net(tmp_path, NET.replace("num_output: 4", "num_output: 6"))
    with pytest.raises(CaffeError, match=r"layer 'conv1' blob 0: shape \(6, 3, 3, 3\) in the weights, "
                                         r"the net expects \(4, 3, 3, 3\)"):
        load_caffe_net(NET, str(model))


def test_blob_count_mismatch(tmp_path):
    _, model, _ = write_random_net(tmp_path, NET.replace("kernel_size: 3 }", "kernel_size: 3 bias_term: false }", 1))
    with pytest.raises(CaffeError, match="'conv1' hold 1 blob"):
        load_caffe_net(NET, str(model))


@pytest.mark.parametrize("text,expect", [
    (input_layer({"data": (1, 3)}) + 'layer { name: "x" type: "Frobnicate" bottom: "data" top: "y" }',
     "layer 'x' has type 'Frobnicate', which is not supported"),
    (input_layer({"data": (1, 3)}) + 'layer { name: "x" type: "ReLU" bottom: "nothing" top: "y" }',
     "layer 'x' needs bottom blob 'nothing'"),
    (input_layer({"data": (1, 3, 4, 4)}) + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
     'pooling_param { kernel_size: 9 } }', "larger than the padded input"),
    (input_layer({"data": (1, 3, 4, 4)}) + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
     'convolution_param { num_output: 4 kernel_size: 3 group: 2 } }', "group 2 must divide"),
    ('layer { name: "d" type: "Data" top: "data" data_param { batch_size: 2 } }'
     'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }', "open shape"),
    (input_layer({"data": (1, 3)}) + 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "f" '
     'inner_product_param { num_output: 4000000000 } }', "limit"),
    (input_layer({"data": (1, 3, 4, 4)}) + 'layer { name: "c" type: "Convoluton" bottom: "data" top: "c" }',
     r"^<net>: layer 'c' has type 'Convoluton', which is not supported; did you mean 'Convolution'\? \(the \d+ "
     r"supported types: tools.caffe.layers.LAYERS\)$"),
    # blob.cpp's Reshape refuses a blob of more than INT_MAX elements, a top as much as a parameter
    (input_layer({"data": (1, 3, 8, 8)}) + 'layer { name: "t" type: "Tile" bottom: "data" top: "t" '
     'tile_param { axis: 1 tiles: 2000000000 } }',
     r"layer 't' \(Tile\) makes top 't' of shape \(1, 6000000000, 8, 8\), 384,000,000,000 elements: Caffe refuses a "
     r"blob over INT_MAX \(2,147,483,647\)"),
    (input_layer({"data": (1, 3, 8, 8)}) + 'layer { name: "d" type: "Deconvolution" bottom: "data" top: "d" '
     'convolution_param { num_output: 2 kernel_size: 3 stride: 100000 } }',
     r"layer 'd' \(Deconvolution\) makes top 'd' of shape \(1, 2, 700003, 700003\), .* over INT_MAX"),
])
def test_bad_nets_fail_with_one_line_naming_the_layer(text, expect):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CaffeError, match=expect) as e:
            load_caffe_net(text)
    assert "\n" not in str(e.value)


def test_data_layer_inputs_take_declared_and_given_shapes(tmp_path):
    text = ('layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TRAIN } '
            'transform_param { crop_size: 8 } data_param { batch_size: 2 } }'
            'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
            'convolution_param { num_output: 4 kernel_size: 3 } }')
    conv_only = input_layer({"data": (1, 5, 8, 8)}) + text[text.index('layer { name: "conv1"'):]
    _, model, _ = write_random_net(tmp_path, conv_only)
    net = load_caffe_net(text, str(model), phase="TRAIN")  # channels taken from conv1's weights
    assert net.input_shapes == {"data": [2, 5, 8, 8], "label": [2]}
    net = load_caffe_net(text, phase="TRAIN", input_shapes={"data": (4, 7, 8, 8)})
    assert net.input_shapes["data"] == [4, 7, 8, 8]


def test_state_dict_plus_net_param_writes_a_loadable_pair(tmp_path):
    _, _, src = write_random_net(tmp_path, NET)
    sd = {"module." + k: v for k, v in src.state_dict().items()}
    save_caffe_net(sd, str(tmp_path / "o.prototxt"), str(tmp_path / "o.caffemodel"), net_param=src.net_param)
    back = load_caffe_net(str(tmp_path / "o.prototxt"), str(tmp_path / "o.caffemodel"))
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(back(x)["fc"], src(x)["fc"])


def test_saving_refuses_nan_weights_and_leaves_no_files(tmp_path):
    _, _, src = write_random_net(tmp_path, NET)
    with torch.no_grad():
        src.layer("fc").bias[0] = float("nan")
    out = tmp_path / "nan"
    out.mkdir()
    with pytest.raises(CaffeError, match="NaN"):
        save_caffe_net(src, str(out / "x.prototxt"), str(out / "x.caffemodel"))
    assert list(out.iterdir()) == []


def test_unwritable_output_is_a_clear_error(tmp_path):
    _, _, src = write_random_net(tmp_path, NET)
    (tmp_path / "no").write_text("a file where the output's folder should be")
    with pytest.raises(DiskError, match="no is a file, not a folder"):  # the disk's refusal, not a Caffe file's fault
        save_caffe_net(src, str(tmp_path / "no" / "x.prototxt"), str(tmp_path / "no" / "x.caffemodel"))


def test_write_caffemodel_for_layers_with_shared_params_duplicates_blobs(tmp_path):
    from tools.caffe.caffemodel import read_caffemodel
    text = input_layer({"data": (1, 2)}) + ''.join(
        f'layer {{ name: "fc{i}" type: "InnerProduct" bottom: "data" top: "o{i}" param {{ name: "w" }} '
        'inner_product_param { num_output: 3 bias_term: false } }' for i in range(2))
    _, model, net = write_random_net(tmp_path, text)
    _, named = read_caffemodel(model)
    assert np.array_equal(named[1][1][0].data, named[2][1][0].data)
    write_caffemodel(str(tmp_path / "no_blobs.caffemodel"), net.net_param, {})  # a net without weights
    _, named = read_caffemodel(str(tmp_path / "no_blobs.caffemodel"))
    assert [n for n, _ in named] == ["input", "fc0", "fc1"] and all(not b for _, b in named)
