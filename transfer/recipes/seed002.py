"""Seed 002 (Keras): cats vs dogs with MobileNet; EMNIST letters -> MNIST transfer of a small CNN."""
from .common import ADAM

RECIPES = {
    "cats-vs-dogs-mobilenet": dict(
        dataset="cats-vs-dogs", model="mobilenet_v2", phase="both", input_size=128, batch_size=32,
        head="dropout:0.2", head_epochs=50, finetune_epochs=10, head_solver=ADAM.format(lr=0.001),
        finetune_solver=ADAM.format(lr=0.00001), augment=dict(rotation=20, hflip=True, shift=0.1),
        reported="002: 96% test"),
    "emnist-to-mnist": dict(
        dataset="emnist-letters", model="emnist-cnn", phase="finetune", batch_size=128, finetune_epochs=10,
        finetune_patience=2, finetune_solver=ADAM.format(lr=0.001),
        then=dict(dataset="mnist", phase="head", limit_train=1000, head_epochs=30, head_patience=5,
                  head_solver=ADAM.format(lr=0.001)),
        reported="002: 91% on EMNIST letters; conv layers frozen, dense layer retrained on 1,000 MNIST "
                 "images: 87%"),
}
