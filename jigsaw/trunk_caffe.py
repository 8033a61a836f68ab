"""A ResNet trunk (`jigsaw train --trunk resnet18|resnet50`) in Caffe's form: a deploy .prototxt and .caffemodel of
Convolution, BatchNorm (use_global_stats) + Scale, ReLU, Eltwise SUM and Pooling, ending in the pooled features
(top `pool`); each stage's output is the top of its name (`stem`, `layer1` .. `layer4`).

torchvision's stem max-pool (3x3, stride 2, pad 1) rounds its output size down; Caffe's rounds up by default (at
32 px: 9 rows where torchvision has 8; at 224 px: 57 where it has 56), so it is written with `round_mode: FLOOR`
(PoolingParameter field 13, BVLC Caffe since 2018; a Caffe without the field, such as the jigsaw fork's, refuses
the file). The pair is checked on the way back: built by tools.caffe, it must give the trunk's features."""
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from tools.caffe import caffe_pb2 as pb
from tools.caffe.caffemodel import write_caffemodel
from tools.caffe.net import load_caffe_net
from tools.nets.trunks import Trunk
from tools.run.atomic import atomic_files
from tools.run.errors import UserError
from tools.run.runtime import generator

CHECK_TOLERANCE = 1e-4  # relative to the largest pooled feature: float32 sums in another order


class _Writer:
    """Appends layers to a NetParameter and collects their blobs by layer name."""

    def __init__(self, size: int):
        self.net, self.blobs = pb.NetParameter(name="trunk"), {}
        layer = self.net.layer.add(name="data", type="Input", top=["data"])
        layer.input_param.shape.add(dim=[1, 3, size, size])

    def conv(self, name: str, bottom: str, m: nn.Conv2d, top: str) -> str:
        if m.groups != 1 or m.dilation != (1, 1) or m.bias is not None:
            raise UserError(f"{name}: grouped, dilated or biased convolutions are not written (a ResNet has none)")
        p = self.net.layer.add(name=name, type="Convolution", bottom=[bottom], top=[top]).convolution_param
        p.num_output, p.bias_term = m.out_channels, False
        p.kernel_h, p.kernel_w = m.kernel_size
        p.stride_h, p.stride_w = m.stride
        p.pad_h, p.pad_w = m.padding
        self.blobs[name] = [m.weight.detach().float().numpy()]
        return top

    def batchnorm(self, name: str, bottom: str, m: nn.BatchNorm2d) -> str:
        """Caffe's BatchNorm (statistics, scale factor 1) then Scale (gamma, beta), in place."""
        bn = self.net.layer.add(name=name, type="BatchNorm", bottom=[bottom], top=[bottom])
        bn.batch_norm_param.use_global_stats, bn.batch_norm_param.eps = True, m.eps
        self.blobs[name] = [m.running_mean.float().numpy(), m.running_var.float().numpy(),
                            np.ones(1, np.float32)]
        sc = self.net.layer.add(name=name + "_scale", type="Scale", bottom=[bottom], top=[bottom])
        sc.scale_param.bias_term = True
        self.blobs[name + "_scale"] = [m.weight.detach().float().numpy(), m.bias.detach().float().numpy()]
        return bottom

    def relu(self, name: str, bottom: str) -> str:
        self.net.layer.add(name=name, type="ReLU", bottom=[bottom], top=[bottom])
        return bottom

    def pool(self, name: str, bottom: str, top: str, **fields) -> str:
        p = self.net.layer.add(name=name, type="Pooling", bottom=[bottom], top=[top]).pooling_param
        for k, v in fields.items():
            setattr(p, k, v)
        return top

    def add(self, name: str, a: str, b: str, top: str) -> str:
        layer = self.net.layer.add(name=name, type="Eltwise", bottom=[a, b], top=[top])
        layer.eltwise_param.operation = pb.EltwiseParameter.SUM
        return top


def _block(w: _Writer, name: str, block: nn.Module, bottom: str, top: str) -> str:
    """A BasicBlock (conv1, conv2) or Bottleneck (conv1..conv3), its downsample, the sum, the ReLU."""
    convs = [c for c in ("conv1", "conv2", "conv3") if hasattr(block, c)]
    x = bottom
    for i, c in enumerate(convs):
        x = w.batchnorm(f"{name}_bn{i + 1}", w.conv(f"{name}_{c}", x, getattr(block, c), f"{name}_{c}"),
                        getattr(block, f"bn{i + 1}"))
        if i < len(convs) - 1:
            x = w.relu(f"{name}_relu{i + 1}", x)
    shortcut = bottom
    if block.downsample is not None:
        conv, bn = block.downsample
        shortcut = w.batchnorm(f"{name}_down_bn", w.conv(f"{name}_down", bottom, conv, f"{name}_down"), bn)
    return w.relu(f"{name}_relu", w.add(f"{name}_sum", x, shortcut, top))


def trunk_net(trunk: Trunk, size: int) -> Tuple[pb.NetParameter, Dict[str, List[np.ndarray]]]:
    """(deploy NetParameter for (1, 3, size, size) input, {layer: blobs}) of a ResNet trunk."""
    if not trunk.arch.startswith("resnet"):
        raise UserError(f"Caffe's form is written for resnet18 and resnet50 trunks, not {trunk.arch}")
    n, w = trunk.net, _Writer(size)
    x = w.relu("relu1", w.batchnorm("bn1", w.conv("conv1", "data", n.conv1, "conv1"), n.bn1))
    x = w.pool("pool1", x, "stem", pool=pb.PoolingParameter.MAX, kernel_size=3, stride=2, pad=1,
               round_mode=pb.PoolingParameter.FLOOR)  # torchvision's rounding, not Caffe's default
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        blocks = list(getattr(n, stage))
        for i, block in enumerate(blocks):
            x = _block(w, f"{stage}_{i}", block, x, stage if i == len(blocks) - 1 else f"{stage}_{i}")
    w.pool("pool", x, "pool", pool=pb.PoolingParameter.AVE, global_pooling=True)
    return w.net, w.blobs


def check_trunk_net(trunk: Trunk, net: pb.NetParameter, caffemodel: str, size: int) -> float:
    """Build the written pair with tools.caffe and compare its pooled features with the trunk's on a seeded
    input; the largest difference relative to the largest feature (raises past CHECK_TOLERANCE)."""
    built = load_caffe_net(net, caffemodel)
    x = torch.randn(2, 3, size, size, generator=generator(0))
    with torch.no_grad():
        want = trunk.eval()(x)
        got = built(data=x, outputs=["pool"])["pool"].flatten(1)
    if got.shape != want.shape:
        raise UserError(f"{caffemodel}: Caffe's form gives features {tuple(got.shape)}, the trunk "
                        f"{tuple(want.shape)}")
    err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
    if err > CHECK_TOLERANCE:
        raise UserError(f"{caffemodel}: Caffe's form differs from the trunk by {err:.2e} of the largest feature")
    return err


def write_trunk_caffe(trunk: Trunk, size: int, prototxt: str, caffemodel: str) -> float:
    """Write the pair as a unit, then check it (returns the relative difference found)."""
    net, blobs = trunk_net(trunk, size)
    with atomic_files(caffemodel, prototxt) as (weights_tmp, text_tmp):
        write_caffemodel(weights_tmp, net, blobs)
        with open(text_tmp, "w") as f:
            f.write(str(net))
    return check_trunk_net(trunk, net, caffemodel, size)
