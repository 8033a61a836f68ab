"""Layer-by-layer parity with OpenCV's DNN Caffe reader (an independent implementation).

Each case is a one-layer net with random weights written by our writer and read by both
implementations. Tolerance: max |delta| <= 1e-4 in float32.

Not here, checked against float64 references of Caffe's formulas in test_layers_reference.py:
layers OpenCV lacks (Bias, Threshold, Clip, Swish, losses, Accuracy) and places where OpenCV 4.x
departs from Caffe: Log ignores scale/shift, LRN ignores k, Slice ignores the legacy slice_dim.
"""
import numpy as np
import pytest

from .helpers import input_layer, opencv_forward, random_inputs, write_random_net

TOL = 1e-4
X = {"data": (2, 6, 13, 11)}  # odd sizes exercise Caffe's ceil rounding

CASES = {
    "conv_k3_s2_p1": (X, 'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 }'),
    "conv_group2_nobias": (X, 'type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 group: 2 bias_term: false }'),
    "conv_dilation2": (X, 'type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 dilation: 2 pad: 2 }'),
    "conv_hw": (X, 'type: "Convolution" convolution_param { num_output: 5 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 }'),
    "deconv_k4_s2_p1": (X, 'type: "Deconvolution" convolution_param { num_output: 3 kernel_size: 4 stride: 2 pad: 1 }'),
    "pool_max_k3_s2": (X, 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }'),
    "pool_max_k3_s2_p1": (X, 'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }'),
    "pool_max_k2_s2": (X, 'type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }'),
    "pool_ave_k3_s2": (X, 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 }'),
    "pool_ave_k3_s2_p1": (X, 'type: "Pooling" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }'),
    "pool_ave_k2_s2": (X, 'type: "Pooling" pooling_param { pool: AVE kernel_size: 2 stride: 2 }'),
    "pool_max_hw": (X, 'type: "Pooling" pooling_param { pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 }'),
    "pool_global_ave": (X, 'type: "Pooling" pooling_param { pool: AVE global_pooling: true }'),
    "pool_global_max": (X, 'type: "Pooling" pooling_param { pool: MAX global_pooling: true }'),
    "lrn_across": (X, 'type: "LRN" lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 }'),
    "lrn_across_size3": (X, 'type: "LRN" lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 }'),
    "lrn_within": (X, 'type: "LRN" lrn_param { local_size: 3 alpha: 0.3 beta: 0.75 norm_region: WITHIN_CHANNEL }'),
    "relu": (X, 'type: "ReLU"'),
    "relu_leaky": (X, 'type: "ReLU" relu_param { negative_slope: 0.1 }'),
    "prelu": (X, 'type: "PReLU"'),
    # prelu channel_shared: Caffe stores its slope as a 0-axis blob, which OpenCV cannot read
    # (cv::Mat needs a dimension); tests/tools/caffe/test_caffe_edges.py checks it against Caffe's rule
    "elu": (X, 'type: "ELU" elu_param { alpha: 0.7 }'),
    "sigmoid": (X, 'type: "Sigmoid"'),
    "tanh": (X, 'type: "TanH"'),
    "absval": (X, 'type: "AbsVal"'),
    "power": (X, 'type: "Power" power_param { power: 2 scale: 0.5 shift: 1 }'),
    "exp": (X, 'type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }'),
    "bnll": (X, 'type: "BNLL"'),
    "innerproduct": (X, 'type: "InnerProduct" inner_product_param { num_output: 7 }'),
    "innerproduct_nobias": (X, 'type: "InnerProduct" inner_product_param { num_output: 7 bias_term: false }'),
    "dropout_test": (X, 'type: "Dropout" dropout_param { dropout_ratio: 0.3 }'),
    "softmax": (X, 'type: "Softmax"'),
    "softmax_axis2": (X, 'type: "Softmax" softmax_param { axis: 2 }'),
    "flatten": (X, 'type: "Flatten"'),
    "flatten_axis2": (X, 'type: "Flatten" flatten_param { axis: 2 }'),
    "reshape": (X, 'type: "Reshape" reshape_param { shape { dim: 0 dim: 3 dim: -1 dim: 11 } }'),
    "batchnorm": (X, 'type: "BatchNorm" batch_norm_param { eps: 0.001 }'),
    "scale_bias": (X, 'type: "Scale" scale_param { bias_term: true }'),
    "scale": (X, 'type: "Scale"'),
}

MULTI = {
    "concat_axis1": ({"a": (2, 3, 5, 4), "b": (2, 2, 5, 4)}, 'type: "Concat" bottom: "a" bottom: "b"', 1),
    "concat_axis2": ({"a": (2, 3, 5, 4), "b": (2, 3, 2, 4)}, 'type: "Concat" bottom: "a" bottom: "b" concat_param { axis: 2 }', 1),
    "eltwise_sum_coeff": ({"a": (2, 3, 5, 4), "b": (2, 3, 5, 4)}, 'type: "Eltwise" bottom: "a" bottom: "b" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 }', 1),
    "eltwise_prod": ({"a": (2, 3, 5, 4), "b": (2, 3, 5, 4)}, 'type: "Eltwise" bottom: "a" bottom: "b" eltwise_param { operation: PROD }', 1),
    "eltwise_max": ({"a": (2, 3, 5, 4), "b": (2, 3, 5, 4)}, 'type: "Eltwise" bottom: "a" bottom: "b" eltwise_param { operation: MAX }', 1),
    "crop": ({"a": (2, 3, 9, 8), "b": (2, 3, 5, 4)}, 'type: "Crop" bottom: "a" bottom: "b" crop_param { axis: 2 offset: 2 offset: 1 }', 1),
    "slice_points": ({"a": (2, 6, 5, 4)}, 'type: "Slice" bottom: "a" slice_param { axis: 1 slice_point: 1 slice_point: 4 }', 3),
    "slice_even": ({"a": (2, 6, 5, 4)}, 'type: "Slice" bottom: "a" slice_param { axis: 1 }', 3),
    "split": ({"a": (2, 6, 5, 4)}, 'type: "Split" bottom: "a"', 2),
}


def _single(shapes, body):
    return input_layer(shapes) + f'layer {{ name: "out" {body} bottom: "data" top: "out" }}\n', ["out"]


def _multi(shapes, body, n_top):
    # OpenCV fetches outputs by layer name, so each top gets an identity Power layer of its own.
    tops = [f"t{i}" for i in range(n_top)]
    top_text = " ".join(f'top: "{t}"' for t in tops)
    text = input_layer(shapes) + f'layer {{ name: "L" {body} {top_text} }}\n'
    for i, t in enumerate(tops):
        text += f'layer {{ name: "out{i}" type: "Power" bottom: "{t}" top: "out{i}" }}\n'
    return text, [f"out{i}" for i in range(n_top)]


def _check(tmp_path, text, outputs):
    proto, model, net = write_random_net(tmp_path, text)
    inputs = random_inputs(net)
    ours = net(**inputs, outputs=outputs)
    theirs = opencv_forward(proto, model, inputs, outputs)
    for name in outputs:
        a, b = ours[name].detach().numpy(), theirs[name]
        assert a.size == b.size, (name, a.shape, b.shape)
        assert np.abs(a - b.reshape(a.shape)).max() <= TOL, name


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_opencv(tmp_path, case):
    _check(tmp_path, *_single(*CASES[case]))


@pytest.mark.parametrize("case", sorted(MULTI))
def test_multi_blob_layer_matches_opencv(tmp_path, case):
    _check(tmp_path, *_multi(*MULTI[case]))
