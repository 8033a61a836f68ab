"""A backbone plus a new head; freezing that also freezes BatchNorm statistics."""
import torch
from torch import nn

from tools.run.errors import UserError
from tools.run.runtime import generator


def make_head(spec, in_dim, n_classes, seed=0):
    """`linear`, or a spec such as `1024,dropout:0.5,512` (ReLU after each width); the last layer
    maps to the classes. Linear layers use Xavier/Glorot-uniform weights and zero biases."""
    layers, width = [], in_dim
    for part in [p.strip() for p in (spec or "linear").split(",") if p.strip()]:
        if part == "linear":
            continue
        if part.startswith("dropout:"):
            try:
                rate = float(part.split(":", 1)[1])
            except ValueError:
                rate = -1.0
            if not 0 <= rate < 1:
                raise UserError(f"head spec '{spec}': '{part}' needs a dropout rate in [0, 1)")
            layers.append(nn.Dropout(rate))
        elif part == "bn":
            layers.append(nn.BatchNorm1d(width))
        elif part.isdigit() and int(part) > 0:
            layers += [nn.Linear(width, int(part)), nn.ReLU()]
            width = int(part)
        else:
            raise UserError(f"head spec '{spec}': cannot read '{part}' (use widths, dropout:P, bn)")
    layers.append(nn.Linear(width, n_classes))
    g = generator(seed)
    head = nn.Sequential(*layers)
    for m in head:
        if isinstance(m, nn.Linear):
            bound = (6.0 / (m.in_features + m.out_features)) ** 0.5
            with torch.no_grad():
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.zero_()
    return head


class TransferModel(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.frozen = set()

    def forward(self, x):
        return self.head(self.backbone.features(x))

    def freeze_backbone(self, except_blocks=()):
        """Freeze every backbone parameter except those of the named blocks (e.g. ResNet's last stage).
        Frozen parts stay in eval mode, so their BatchNorm running statistics do not move either."""
        unknown = [b for b in except_blocks if b not in self.backbone.blocks]
        if unknown:
            raise UserError(f"unknown block(s) {unknown}; this backbone has {self.backbone.blocks}")
        trainable = {id(p) for b in except_blocks for p in self.backbone.block(b).parameters()}
        self.frozen = set()
        for name, p in self.backbone.named_parameters():
            p.requires_grad = id(p) in trainable
            if not p.requires_grad:
                self.frozen.add(name)
        self.train(self.training)

    def unfreeze_all(self):
        for p in self.backbone.parameters():
            p.requires_grad = True
        self.frozen = set()
        self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if mode and self.frozen:  # .train() must not wake up frozen BatchNorm/Dropout layers
            for module in self.backbone.modules():
                params = list(module.parameters(recurse=False))
                if params and all(not p.requires_grad for p in params):
                    module.eval()
                elif isinstance(module, nn.modules.batchnorm._BatchNorm) and not params:
                    module.eval()
        return self
