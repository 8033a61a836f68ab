"""torchvision trunks, one builder for both `jigsaw` (the puzzle's and PIRL's trunk) and `transfer` (a backbone):
named stages first to last, pooled features, a width multiplier where the family has one, and the weights
kept under torchvision's own names so a trunk exports as a plain torchvision `state_dict`."""
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from tools.nets import TRUNK_NAMES
from tools.run.errors import UserError, unknown
from tools.run.runtime import import_torchvision, seed_global

# name -> (the stages probed, first to last: torchvision module paths; native input side)
FAMILIES: Dict[str, Tuple[Tuple[str, ...], int]] = {
    "resnet18": (("stem", "layer1", "layer2", "layer3", "layer4"), 224),
    "resnet50": (("stem", "layer1", "layer2", "layer3", "layer4"), 224),
    # mobilenet_v3_large: the last block of each resolution (strides 2, 4, 8, 16, 32) and the final 1x1 conv
    "mobilenet_v3_large": (("features.1", "features.3", "features.6", "features.12", "features.15",
                            "features.16"), 224),
    "vgg16": (("features.4", "features.9", "features.16", "features.23", "features.30"), 224),  # after each pool
}
WIDTHS = {"resnet18", "resnet50", "mobilenet_v3_large"}  # the families whose channels scale with --width


def _narrow_resnet(arch: str, width: float) -> nn.Module:
    """torchvision's ResNet with every stage's channels times `width` (at least 8), built by torchvision's own
    layer maker so the module names (and a width-1 net) are torchvision's."""
    tv = import_torchvision()
    block, layers = (tv.models.resnet.BasicBlock, [2, 2, 2, 2]) if arch == "resnet18" else \
        (tv.models.resnet.Bottleneck, [3, 4, 6, 3])
    net = tv.models.resnet.ResNet(block, layers)
    if width == 1.0:
        return net
    planes = [max(8, int(round(p * width))) for p in (64, 128, 256, 512)]
    net.inplanes = planes[0]
    net.conv1 = nn.Conv2d(3, planes[0], 7, 2, 3, bias=False)
    net.bn1 = nn.BatchNorm2d(planes[0])
    for i, (p, n) in enumerate(zip(planes, layers)):
        setattr(net, f"layer{i + 1}", net._make_layer(block, p, n, stride=1 if i == 0 else 2))
    net.fc = nn.Linear(planes[-1] * block.expansion, 1000)
    for m in net.modules():  # torchvision's own initialisation of the rebuilt layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def _torchvision_net(arch: str, width: float) -> nn.Module:
    if arch in ("resnet18", "resnet50"):
        return _narrow_resnet(arch, width)
    tv = import_torchvision()
    if arch == "mobilenet_v3_large":
        return tv.models.mobilenet_v3_large(weights=None, width_mult=width)
    return tv.models.vgg16(weights=None)


class Trunk(nn.Module):
    """A torchvision net without its classifier: `forward(x)` -> pooled (N, dim) features; `stages` names the
    probed outputs; `net` holds the weights under torchvision's names (`torchvision_state()`)."""

    def __init__(self, arch: str, width: float, net: nn.Module):
        super().__init__()
        self.arch, self.width, self.net = arch, width, net
        self.stage_names: Tuple[str, ...] = FAMILIES[arch][0]
        self.input_size = FAMILIES[arch][1]
        if arch.startswith("resnet"):
            self.net.fc = nn.Identity()  # no weights: torchvision's resnet takes the state with only fc missing
            self.dim = self.net.layer4[-1].conv1.in_channels if arch == "resnet18" else \
                self.net.layer4[-1].conv3.out_channels
        elif arch == "mobilenet_v3_large":
            self.net.classifier = nn.Identity()
            self.dim = self.net.features[-1].out_channels
        else:
            self.net.classifier = nn.Identity()
            self.net.avgpool = nn.AdaptiveAvgPool2d(1)  # tiles are far smaller than VGG's 224 px
            self.dim = 512

    def stage(self, name: str) -> nn.Module:
        """The module whose output is stage `name` (a forward hook point)."""
        if name == "stem":
            return self.net.maxpool
        return self.net.get_submodule(name)

    def body(self) -> nn.Sequential:
        """The trunk as named stages in order, then the pooling (for transfer's Backbone)."""
        n = self.net
        if self.arch.startswith("resnet"):
            parts = [("stem", nn.Sequential(n.conv1, n.bn1, n.relu, n.maxpool)), ("layer1", n.layer1),
                     ("layer2", n.layer2), ("layer3", n.layer3), ("layer4", n.layer4),
                     ("pool", nn.AdaptiveAvgPool2d(1))]
        else:
            parts = [("features", n.features), ("pool", nn.AdaptiveAvgPool2d(1))]
        return nn.Sequential(OrderedDict(parts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)

    def torchvision_state(self) -> Dict[str, torch.Tensor]:
        """The weights as torchvision names them (no classifier): `torchvision.models.ARCH().load_state_dict(
        state, strict=False)` reports only the classifier missing (at width 1)."""
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def no_decay(self) -> List[nn.Parameter]:
        """BatchNorm's scales and shifts (VISSL: regularize_bn False)."""
        return [p for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                for p in m.parameters()]


def build_trunk(arch: str, width: float = 1.0, seed: Optional[int] = None) -> Trunk:
    """A trunk of `arch` at `width`, its initial weights drawn from `seed` (torch's global stream is left as it
    was); one line for a name or a width the family does not have."""
    if arch not in FAMILIES:
        raise unknown("trunk", arch, FAMILIES)
    if width != 1.0 and arch not in WIDTHS:
        raise UserError(f"--width {width:g}: {arch} has no width multiplier (only {', '.join(sorted(WIDTHS))})")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            seed_global(seed)
        return Trunk(arch, width, _torchvision_net(arch, width))


def load_torchvision_state(trunk: Trunk, state: Dict[str, torch.Tensor], source: str) -> None:
    """torchvision-named weights into a trunk (the classifier's ignored); one line when they do not fit."""
    own = trunk.net.state_dict()
    if not isinstance(state, dict):
        raise UserError(f"{source}: not a state_dict (a {type(state).__name__})")
    body = {k: v for k, v in state.items() if k in own}
    odd = [k for k, v in body.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise UserError(f"{source}: {odd[0]} is a {type(body[odd[0]]).__name__}, not a tensor")
    missing = [k for k in own if k not in body]
    if missing:
        raise UserError(f"{source}: missing {len(missing)} tensors for {trunk.arch} (width {trunk.width:g}), "
                        f"e.g. {missing[0]}")
    wrong = [k for k, v in body.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise UserError(f"{source}: {wrong[0]} is {tuple(body[wrong[0]].shape)}, {trunk.arch} at width "
                        f"{trunk.width:g} has {tuple(own[wrong[0]].shape)}")
    trunk.net.load_state_dict(body)
