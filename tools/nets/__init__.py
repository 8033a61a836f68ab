"""Trunks below both `jigsaw` and `transfer`: torchvision nets as named stages (`trunks.py`). The names are
here, light, for the command lines' choices."""

TRUNK_NAMES = ("resnet18", "resnet50", "mobilenet_v3_large", "vgg16")
