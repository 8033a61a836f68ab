"""Seed 000 (Keras): BaseNet / BaseNet++ on a 25-class CIFAR-100 subset; ResNet50 on CUB-200 (V0, V4)."""
from .common import ADAM

RECIPES = {
    "cifar25-basenet": dict(
        dataset="cifar100-25", model="basenet", phase="finetune", batch_size=64, finetune_epochs=50,
        finetune_patience=50, val_fraction=0.10, finetune_solver=ADAM.format(lr=0.001),
        reported="000: 41.36% (mean of 3 runs)"),
    "cifar25-basenet++": dict(
        dataset="cifar100-25", model="basenet++", phase="finetune", batch_size=64, finetune_epochs=50,
        finetune_patience=50, val_fraction=0.10, finetune_solver=ADAM.format(lr=0.001),
        augment=dict(rotation=10, hflip=True, shift=0.2), reported="000: 66.25% (mean of 3 runs)"),
    "cub200-resnet50-v0": dict(
        dataset="cub200", model="resnet50", phase="head", head="linear", batch_size=32, head_epochs=15,
        head_solver=ADAM.format(lr=0.001), reported="000 V0: 42.57%"),
    "cub200-resnet50-v4": dict(
        dataset="cub200", model="resnet50", phase="both", head="1024,dropout:0.5,512", batch_size=32,
        head_epochs=15, finetune_epochs=15, unfreeze=("4",), head_solver=ADAM.format(lr=0.0001),
        finetune_solver=ADAM.format(lr=0.00001), augment=dict(rotation=10, hflip=True, shift=0.1),
        reported="000 V4: 50.18% (frozen warm-up, then the last stage unfrozen)"),
}
