"""Shared test helpers: write a net with random weights, run it through OpenCV's Caffe reader."""
import warnings

import numpy as np
import torch

from tools import load_caffe_net, save_caffe_net


def randomize(net, seed=0, scale=0.5):
    """Give every parameter and BatchNorm statistic random (valid) values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in {id(p): p for p in net.parameters()}.values():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        for name, b in net.named_buffers():
            if name.endswith("variance"):
                b.copy_(torch.rand(b.shape, generator=g) * 2 + 0.1)
            elif name.endswith("scale_factor"):
                b.fill_(2.5)
            else:
                b.copy_(torch.randn(b.shape, generator=g))
    return net


def write_random_net(tmp_path, text, seed=0, name="net"):
    """Build `text`, randomise its weights, save .prototxt + .caffemodel; returns (proto, model, net)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = randomize(load_caffe_net(text, seed=seed), seed)
    proto, model = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    save_caffe_net(net, str(proto), str(model))
    return str(proto), str(model), net


def random_inputs(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(tuple(s), generator=g) for k, s in net.input_shapes.items()}


def opencv_forward(proto, model, inputs, outputs):
    import cv2

    cvnet = cv2.dnn.readNetFromCaffe(proto, model)
    for name, x in inputs.items():
        cvnet.setInput(np.ascontiguousarray(x.numpy()), name)
    outs = cvnet.forward(list(outputs))
    return dict(zip(outputs, outs))


def input_layer(shapes):
    """Input layer text for {name: shape}."""
    tops = " ".join(f'top: "{n}"' for n in shapes)
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes.values())
    return f'layer {{ name: "input" type: "Input" {tops} input_param {{ {dims} }} }}\n'


CAFFENET_WIDTHS = {"c1": 96, "c2": 256, "c3": 384, "c4": 384, "c5": 256, "f6": 4096, "f7": 4096, "f8": 1000}


def caffenet_text(scale=1.0):
    """BVLC's CaffeNet deploy net (227 px input), its widths multiplied by `scale`."""
    w = {k: max(2, int(v * scale) // 2 * 2) for k, v in CAFFENET_WIDTHS.items()}
    return f'''input: "data" input_shape {{ dim: 1 dim: 3 dim: 227 dim: 227 }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param {{ num_output: {w["c1"]} kernel_size: 11 stride: 4 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param {{ local_size: 5 alpha: 0.0001 beta: 0.75 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2" convolution_param {{ num_output: {w["c2"]} pad: 2 kernel_size: 5 group: 2 }} }}
layer {{ name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "norm2" type: "LRN" bottom: "pool2" top: "norm2" lrn_param {{ local_size: 5 alpha: 0.0001 beta: 0.75 }} }}
layer {{ name: "conv3" type: "Convolution" bottom: "norm2" top: "conv3" convolution_param {{ num_output: {w["c3"]} pad: 1 kernel_size: 3 }} }}
layer {{ name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }}
layer {{ name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4" convolution_param {{ num_output: {w["c4"]} pad: 1 kernel_size: 3 group: 2 }} }}
layer {{ name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }}
layer {{ name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5" convolution_param {{ num_output: {w["c5"]} pad: 1 kernel_size: 3 group: 2 }} }}
layer {{ name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }}
layer {{ name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param {{ num_output: {w["f6"]} weight_filler {{ type: "gaussian" std: 0.005 }} }} }}
layer {{ name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }}
layer {{ name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param {{ dropout_ratio: 0.5 }} }}
layer {{ name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param {{ num_output: {w["f7"]} weight_filler {{ type: "gaussian" std: 0.005 }} }} }}
layer {{ name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }}
layer {{ name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" dropout_param {{ dropout_ratio: 0.5 }} }}
layer {{ name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" inner_product_param {{ num_output: {w["f8"]} weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }}
'''
