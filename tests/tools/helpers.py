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
