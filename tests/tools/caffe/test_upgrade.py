"""V0/V1 nets, legacy inputs and data-layer fields upgrade to the current format; phase filtering."""
import warnings

import pytest
import torch

from tools.caffe import caffe_pb2 as pb
from tools import load_caffe_net, read_net
from tools.run.errors import CaffeError
from tools.caffe.upgrade import filter_net

V1_NET = '''
name: "v1"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 param: "shared_w"
  convolution_param { num_output: 4 kernel_size: 3 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "pool1" bottom: "label" include { phase: TRAIN } }
'''

V0_NET = '''
name: "v0"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 7 input_dim: 7
layers { layer { name: "pad1" type: "padding" pad: 1 } bottom: "data" top: "pad1" }
layers { layer { name: "conv1" type: "conv" num_output: 2 kernelsize: 3 stride: 2 biasterm: false
                 weight_filler { type: "constant" value: 1 } } bottom: "pad1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 1 } bottom: "conv1" top: "pool1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 3 } bottom: "pool1" top: "fc" }
'''


def _read(text, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        net = read_net(text, **kw)
    return net, [str(x.message) for x in w]


def test_v1_net_upgrades_types_params_and_inputs():
    net, warns = _read(V1_NET)
    assert any("upgraded V1 layers, legacy input fields" in w for w in warns)
    assert [l.type for l in net.layer] == ["Input", "Convolution", "ReLU", "Pooling", "SoftmaxWithLoss"]
    assert list(net.layer[0].input_param.shape[0].dim) == [2, 3, 8, 8]
    conv = net.layer[1]
    assert [(p.name, p.lr_mult, p.decay_mult) for p in conv.param] == [("shared_w", 1, 1), ("", 2, 0)]
    assert conv.convolution_param.num_output == 4
    assert not net.input and not net.input_dim and not net.layers


def test_v1_net_runs_and_phase_filter_drops_train_only_layers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(V1_NET, phase="TEST")
    assert "loss" not in net.layer_keys and net.output_names == ["pool1"]
    assert net(torch.zeros(2, 3, 8, 8))["pool1"].shape == (2, 4, 3, 3)


def test_v0_net_with_padding_layer():
    net, warns = _read(V0_NET)
    assert any("V0 layers" in w for w in warns)
    assert [l.name for l in net.layer] == ["input", "conv1", "pool1", "fc"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.convolution_param.pad) == [1]
    assert not conv.convolution_param.bias_term and conv.convolution_param.weight_filler.value == 1
    assert net.layer[2].pooling_param.pool == pb.PoolingParameter.AVE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = load_caffe_net(V0_NET)
    assert m.blob_shapes["conv1"] == (1, 2, 4, 4)
    y = m(torch.ones(1, 3, 7, 7), outputs=["conv1"])["conv1"]
    assert y[0, 0, 0, 0].item() == 12.0 and y[0, 0, 1, 1].item() == 27.0  # corner sees 2x2x3 ones


def test_old_data_layer_transform_fields_move_to_transform_param():
    net, _ = _read('layers { name: "d" type: DATA top: "data" top: "label" '
                   'data_param { source: "db" batch_size: 4 crop_size: 227 mirror: true scale: 0.5 } }')
    layer = net.layer[0]
    assert layer.transform_param.crop_size == 227 and layer.transform_param.mirror
    assert layer.transform_param.scale == 0.5 and not layer.data_param.HasField("crop_size")


RULES = '''
layer { name: "always" type: "ReLU" }
layer { name: "train" type: "ReLU" include { phase: TRAIN } }
layer { name: "test" type: "ReLU" include { phase: TEST } }
layer { name: "not_test" type: "ReLU" exclude { phase: TEST } }
layer { name: "deploy_stage" type: "ReLU" include { stage: "deploy" } }
layer { name: "not_deploy" type: "ReLU" include { not_stage: "deploy" } }
layer { name: "level2" type: "ReLU" include { min_level: 2 } }
layer { name: "either" type: "ReLU" include { phase: TRAIN } include { stage: "x" } }
'''


@pytest.mark.parametrize("phase,level,stages,kept", [
    ("TRAIN", 0, (), {"always", "train", "not_test", "not_deploy", "either"}),
    ("TEST", 0, (), {"always", "test", "not_deploy"}),
    ("TEST", 2, ("deploy",), {"always", "test", "deploy_stage", "level2"}),
    ("TEST", 0, ("x",), {"always", "test", "not_deploy", "either"}),
])
def test_state_rules(phase, level, stages, kept):
    net, _ = _read(RULES)
    got = {l.name for l in filter_net(net, phase, level, stages).layer}
    assert got == kept


def test_include_and_exclude_together_is_an_error():
    net, _ = _read('layer { name: "x" type: "ReLU" include { phase: TRAIN } exclude { phase: TEST } }')
    with pytest.raises(CaffeError, match="both include and exclude"):
        filter_net(net, "TEST")


def test_input_dim_count_checked():
    with pytest.raises(CaffeError, match="4 numbers per input"):
        _read('input: "data" input_dim: 1 input_dim: 3')
