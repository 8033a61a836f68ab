"""Random-init twins of a backbone: the same architecture, width and input scale with fresh weights,
the baseline every probe compares a pretrained net with."""
import copy

import torch
from torch import nn

from tools.run.runtime import generator


def make_twin(backbone, seed, init="msra", model_name="", sample=None):
    """The same backbone with fresh weights: a CFN's Caffe fillers (init="caffe"), else He-normal
    weights and zero biases; other layers reset. A CFN's He twin has its weight layers divided by
    RMS(sample)^(1/8), as `jigsaw train --init msra` scales its eight layers to its tiles."""
    twin = copy.deepcopy(backbone)
    g = generator(seed)
    with torch.no_grad():
        if init == "caffe" and model_name == "cfn":
            from jigsaw.caffe_form import FILLERS
            for name in twin.blocks:
                std, bias = FILLERS[name]
                layer = twin.block(name)
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) * std)
                layer.bias.fill_(bias)
            return twin
        for m in twin.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.zero_()
            elif hasattr(m, "reset_parameters") and m is not twin:
                m.reset_parameters()
        if model_name == "cfn" and sample is not None:  # each weighted layer's share, as CFN.scale_to_input
            from jigsaw.architecture import WEIGHTED
            rms = float(sample.float().pow(2).mean().sqrt())
            for name in twin.blocks:
                twin.block(name).weight.div_(rms ** (1 / len(WEIGHTED)) if rms > 0 else 1.0)
    return twin
