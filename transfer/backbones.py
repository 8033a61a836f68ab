"""Backbones behind one registry with a uniform interface: `features(x) -> (N, D)`, `feature_dim`,
`input_size`, `in_channels`, `blocks` (named stages, first to last, for partial unfreezing).

`cfn` is one CFN branch (conv1..pool5, optionally fc6) from a `jigsaw train` checkpoint or a CFN
.caffemodel; torchvision models take weights from a local file or a torchvision weight name; the seeds'
own small nets (BaseNet, BaseNet++, the Fashion-MNIST CNN and MLP, the EMNIST CNN, the blood-cell CNN)
are built here and trained from scratch.
"""
import functools
from typing import Optional

import torch
from torch import nn

from tools.run.checkpoint import load_checkpoint
from tools.run.errors import UserError, unknown
from tools.run.runtime import import_torchvision

BACKBONES = {}


def register(name, **meta):
    def deco(fn):
        if name in BACKBONES:  # a second builder under one name would silently replace the first
            raise ValueError(f"backbone '{name}' is registered twice ({BACKBONES[name][0].__qualname__}, "
                             f"{fn.__qualname__})")
        BACKBONES[name] = (fn, meta)
        return fn
    return deco


class Backbone(nn.Module):
    def __init__(self, body, feature_dim, input_size, in_channels, blocks, scratch=False):
        super().__init__()
        self.body, self.feature_dim, self.input_size, self.in_channels = body, feature_dim, input_size, in_channels
        self.blocks, self.scratch = blocks, scratch
        self.record = {}  # what the weights were trained with (a CFN's puzzle recipe), for config.json
        self.preprocess = None  # a backbone's own input transform of 0-1 RGB images, if it has one

    def features(self, x):
        return self.body(x).flatten(1)

    def forward(self, x):
        return self.features(x)

    def feature_dim_at(self, size):
        """Features per image at inputs of `size` px (the head's width); one line when too small."""
        if size == self.input_size:
            return self.feature_dim
        try:
            with torch.no_grad():
                p = next(self.parameters(), None)
                x = torch.zeros(1, self.in_channels, size, size, device=p.device if p is not None else "cpu")
                return int(self.features(x).shape[1])
        except RuntimeError:
            raise UserError(f"--input-size {size}: too small for this model (its native size is "
                            f"{self.input_size} px)") from None

    def block(self, name):
        return dict(self.body.named_children())[name] if name in dict(self.body.named_children()) \
            else self.body.get_submodule(name)


def build_backbone(name: str, weights: Optional[str] = None, **kw) -> "Backbone":
    if name not in BACKBONES:
        raise unknown("model", name, BACKBONES)
    backbone = BACKBONES[name][0](weights=weights, **kw)
    if backbone.scratch and weights not in (None, "none"):
        _load_transfer_backbone(backbone, weights)
    return backbone


def _load_transfer_backbone(backbone, path):
    """Start one of the seeds' nets from the backbone of an earlier `transfer` run (its model.pt)."""
    state = load_checkpoint(path).get("model", {})
    body = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not body:
        raise UserError(f"{path}: no backbone weights (expected a `transfer` run's model.pt)")
    try:
        backbone.load_state_dict(body)
    except RuntimeError as e:
        raise UserError(f"{path}: backbone weights do not fit this model ({str(e).splitlines()[0]})") from None


# ---- CFN branch -------------------------------------------------------------------------------

class _CFNBranch(nn.Module):
    """The shared branch of a CFN (its fc7/fc8 are left behind)."""

    def __init__(self, cfn, upto):
        super().__init__()
        from jigsaw.architecture import CONVS
        for name in CONVS:
            setattr(self, name, getattr(cfn, name))
        self.fc6 = cfn.fc6 if upto == "fc6" else None
        self.upto = upto

    def forward(self, x):
        from jigsaw.cfn import branch_forward
        return branch_forward(self, x, self.upto)


@register("cfn", input_size=64,
          what="a CFN branch conv1-fc6 (jigsaw checkpoint or .caffemodel; BGR 0-255 input)")
def cfn_backbone(weights=None, upto="pool5", **kw):
    from jigsaw.architecture import CONVS
    from jigsaw.recipes import DEFAULT, recipe
    from jigsaw.tiles import branch_input
    if weights in (None, "none"):
        if weights is None:
            raise UserError("model 'cfn' needs --weights: a `jigsaw train` checkpoint (.pt) or a CFN "
                            ".caffemodel (or --weights none for a random branch)")
        from jigsaw.cfn import CFN
        cfn = CFN(num_permutations=1000)
        # a random twin gets the preprocessing of the recipe it stands in for
        record = dict(recipe=kw.get("recipe") or DEFAULT, recipe_source="random initialisation")
    else:
        from jigsaw.checkpoint import read_cfn
        cfn, _, _, record = read_cfn(weights)
    branch = _CFNBranch(cfn, upto)
    side = cfn.pool5_side(cfn.tile)
    dim = cfn.widths["fc6"] if upto == "fc6" else cfn.widths["conv5"] * side * side
    blocks = list(CONVS) + (["fc6"] if upto == "fc6" else [])
    backbone = Backbone(branch, dim, cfn.tile, 3, blocks)
    backbone.record = record
    # the branch gets in transfer what it got in pretraining: BGR, 0-255, the recipe's normalisation
    backbone.preprocess = functools.partial(branch_input, cfg=recipe(record["recipe"],
                                                                     **record.get("recipe_options", {})))
    return backbone


# ---- torchvision ------------------------------------------------------------------------------

def _torchvision(arch, weights):
    if weights is None:  # the user's mistake is said whether or not torchvision loads here
        raise UserError(f"model '{arch}' needs --weights: a local .pth state_dict, a torchvision weight "
                         "name such as IMAGENET1K_V1 (downloads), or 'none' for random initialisation")
    state = None
    if str(weights).endswith((".pth", ".pt")):
        state = load_checkpoint(weights, "a loadable state_dict")
        if not isinstance(state, dict):
            raise UserError(f"{weights}: not a state_dict (a {type(state).__name__})")
    torchvision = import_torchvision()
    builder = getattr(torchvision.models, arch)
    if weights == "none":
        return builder(weights=None)
    if state is not None:
        model = builder(weights=None)
        missing, unexpected = model.load_state_dict(state.get("state_dict", state), strict=False)
        if missing:
            raise UserError(f"{weights}: missing {len(missing)} tensors for {arch}, e.g. {missing[0]}")
        return model
    try:
        return builder(weights=weights)
    except (ValueError, KeyError):  # not one of this architecture's weight names
        names = ", ".join(w.name for w in torchvision.models.get_model_weights(arch))
        raise UserError(f"--weights {weights}: not a local .pth, 'none' or one of torchvision's {arch} weight "
                        f"names ({names})") from None
    except OSError as e:  # offline, a proxy, a full cache: the download is the problem, not the run
        reason = getattr(e, "reason", None) or e
        raise UserError(f"--weights {weights}: could not download torchvision's {arch} weights ({reason}); "
                        f"on a machine without network, give a local .pth (torchvision's file from "
                        f"~/.cache/torch/hub/checkpoints/) or 'none'") from None


@register("alexnet", input_size=224,
          what="torchvision AlexNet (--weights .pth, IMAGENET1K_V1 or none)")
def alexnet(weights=None, **kw):
    m = _torchvision("alexnet", weights)
    body = nn.Sequential(m.features, m.avgpool, nn.Flatten(), *list(m.classifier.children())[:-1])
    return Backbone(body, 4096, 224, 3, ["0", "1", "3", "4", "6"])


def _trunk_backbone(arch, weights):
    """A torchvision trunk (tools/nets/trunks.py) as a backbone: its stages are the probe's layers. `weights`: a
    `jigsaw train --trunk ARCH` checkpoint (the trunk it pretrained, at its width, with the input it saw), a
    torchvision .pth state_dict, a torchvision weight name, or none."""
    from tools.nets.trunks import build_trunk, load_torchvision_state
    ck, record, preprocess = None, {}, None
    if weights is None:
        _torchvision(arch, weights)  # one line: what --weights takes
    if str(weights).endswith((".pth", ".pt", ".torch")):
        ck = load_checkpoint(weights, "a loadable state_dict")
        if not isinstance(ck, dict):
            raise UserError(f"{weights}: not a state_dict (a {type(ck).__name__})")
    from jigsaw.checkpoint import is_trunk_checkpoint
    if ck is not None and is_trunk_checkpoint(ck):
        if ck["trunk"] != arch:
            raise UserError(f"{weights}: a `jigsaw train --trunk {ck['trunk']}` checkpoint, not {arch}'s "
                            f"(give --model {ck['trunk']})")
        from jigsaw.checkpoint import read_trunk
        trunk, _ = read_trunk(weights, ck)
        record, preprocess = _pretext_input(ck, weights)
    else:
        trunk = build_trunk(arch)
        if ck is not None:
            load_torchvision_state(trunk, vissl_trunk(ck) or ck.get("state_dict", ck), weights)
        elif weights != "none":
            load_torchvision_state(trunk, _torchvision(arch, weights).state_dict(), f"torchvision's {weights}")
    body = trunk.body()
    backbone = Backbone(body, trunk.dim, trunk.input_size, 3, list(trunk.stage_names))
    backbone.record, backbone.preprocess = record, preprocess
    if ck is not None and is_trunk_checkpoint(ck):  # probed at the side it was pretrained on, as a CFN branch is
        backbone.input_size = int(ck.get("input_size") or backbone.input_size)
    return backbone


VISSL_PREFIX = "_feature_blocks."  # VISSL's ResNe(X)t trunk names its torchvision modules under this


def vissl_trunk(ck):
    """The trunk of a VISSL checkpoint (its jigsaw and PIRL releases: `classy_state_dict` -> base_model -> model ->
    trunk, or `model_state_dict`, or the trunk alone), under torchvision's names; None if `ck` is not VISSL's."""
    trunk = ck.get("classy_state_dict") if "classy_state_dict" in ck else ck.get("model_state_dict", ck)
    for key in ("base_model", "model", "trunk") if "classy_state_dict" in ck else ():
        trunk = trunk.get(key) if isinstance(trunk, dict) else None
    if not isinstance(trunk, dict):
        return None
    if not any(str(k).startswith(VISSL_PREFIX) for k in trunk):
        return None
    return {str(k)[len(VISSL_PREFIX):]: v for k, v in trunk.items() if str(k).startswith(VISSL_PREFIX)}


def _pretext_input(ck, weights):
    """(record, preprocess) of a trunk pretrained by `jigsaw train`: jigsaw tiles are the recipe's (BGR, 0-255,
    its normalisation), PIRL's views RGB with ImageNet's mean and deviation; transfer gives whole images alike."""
    from jigsaw.recipes import recipe_of
    from jigsaw.tiles import branch_input
    if ck["method"] == "pirl":
        from jigsaw.pirl_views import normalise_rgb01
        return dict(method="pirl", trunk=ck["trunk"], width=float(ck["width"]), recipe_source=str(weights)), \
            normalise_rgb01
    options = ck.get("recipe_options") or {}
    if not isinstance(ck.get("recipe") or "", str) or not isinstance(options, dict) \
            or not all(isinstance(k, str) for k in options):
        raise UserError(f"{weights}: its recipe record ({ck.get('recipe')!r}, {options!r:.80}) is not a recipe")
    pcfg = recipe_of(ck)  # one line for a recipe name or option the file invents
    record = dict(method=ck["method"], trunk=ck["trunk"], width=float(ck["width"]), recipe=pcfg.recipe,
                  recipe_options=dict(ck.get("recipe_options") or {}), recipe_source=str(weights))
    return record, functools.partial(branch_input, cfg=pcfg)


for _arch in ("resnet18", "resnet50", "mobilenet_v3_large", "vgg16"):
    register(_arch, input_size=224, what=f"torchvision {_arch} (--weights .pth, a torchvision weight name, none, "
                                         f"or a `jigsaw train --trunk {_arch}` checkpoint)")(
        functools.partial(lambda weights=None, arch=_arch, **kw: _trunk_backbone(arch, weights)))


@register("mobilenet_v2", input_size=224,
          what="torchvision MobileNetV2 (--weights .pth, IMAGENET1K_V1/V2 or none)")
def mobilenet_v2(weights=None, **kw):
    m = _torchvision("mobilenet_v2", weights)
    return Backbone(nn.Sequential(m.features, nn.AdaptiveAvgPool2d(1)), 1280, 224, 3, ["0"])


# ---- the seeds' own nets (trained from scratch; the last layer is the head) --------------------

def _scratch(body, dim, size, channels):
    return Backbone(body, dim, size, channels, [n for n, _ in body.named_children()], scratch=True)


@register("basenet", input_size=32,
          what="BaseNet, the small CNN of the CIFAR-100 (25 classes) experiment, from scratch")
def basenet(**kw):  # seed 000: 24,197 parameters with its 25-way head
    body = nn.Sequential(nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 50), nn.ReLU())
    return _scratch(body, 50, 32, 3)


@register("basenet++", input_size=32,
          what="BaseNet++ (BaseNet with batch norm and dropout), from scratch")
def basenet_pp(**kw):  # seed 000: 809,945 parameters with its 25-way head
    body = nn.Sequential(
        nn.Conv2d(3, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.Conv2d(128, 128, 3), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(128, 64, 5), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(1600, 256), nn.ReLU(), nn.Dropout(0.25), nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.25))
    return _scratch(body, 64, 32, 3)


@register("fmnist-cnn", input_size=28,
          what="the CNN of the Fashion-MNIST experiment, from scratch")
def fmnist_cnn(**kw):  # seed 001
    body = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Dropout(0.25), nn.Flatten(), nn.Linear(64 * 12 * 12, 600), nn.ReLU(),
                         nn.Dropout(0.25), nn.Linear(600, 120), nn.ReLU())
    return _scratch(body, 120, 28, 1)


@register("mlp", input_size=28,
          what="the one-hidden-layer MLP of the Fashion-MNIST experiment, from scratch")
def mlp(hidden=512, **kw):  # seed 001: one hidden layer
    body = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Dropout(0.25))
    return _scratch(body, hidden, 28, 1)


@register("emnist-cnn", input_size=28,
          what="the CNN of the EMNIST letters -> MNIST experiment, from scratch")
def emnist_cnn(**kw):  # seed 002: Conv 10, MaxPool, Conv 10, Flatten 1960 (padded 'same' convs)
    body = nn.Sequential(nn.Conv2d(1, 10, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(10, 10, 3, padding=1), nn.ReLU(), nn.Flatten())
    return _scratch(body, 1960, 28, 1)


@register("blood-cnn", input_size=150,
          what="the CNN of the blood-cell experiment, from scratch")
def blood_cnn(**kw):  # seed 004: 4 x (conv 3x3 + pool), 32 -> 128 filters, dropout, dense 512
    chans, layers, c_in = (32, 64, 128, 128), [], 3
    for c in chans:
        layers += [nn.Conv2d(c_in, c, 3), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c
    body = nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 7 * 7, 512), nn.ReLU())
    return _scratch(body, 512, 150, 3)


def first_conv(module):
    """The first convolution's weights (a detached CPU copy) of a module, or None: for filter plots."""
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else conv.weight.detach().cpu().clone()


def first_conv_of(weights):
    """First-layer filters from a jigsaw checkpoint, a CFN .caffemodel or a `transfer` model.pt, and
    whether they take Caffe's BGR input (a CFN's do)."""
    if str(weights).endswith(".caffemodel"):
        from jigsaw.checkpoint import read_cfn
        return first_conv(read_cfn(weights)[0]), True
    ck = load_checkpoint(weights)
    state = ck.get("model", {}) if isinstance(ck, dict) else {}
    convs = [v for v in state.values() if hasattr(v, "dim") and v.dim() == 4]
    if not convs:
        raise UserError(f"{weights}: no convolution weights to plot")
    from jigsaw.checkpoint import is_cfn_checkpoint
    bgr = is_cfn_checkpoint(ck) or ck.get("model_name") == "cfn"
    return convs[0], bgr
