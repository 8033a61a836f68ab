"""Seed 001 (PyTorch): CNN vs one-hidden-layer MLP on Fashion-MNIST."""
from .common import ADAM

RECIPES = {
    "fashion-mnist-cnn": dict(
        dataset="fashion-mnist", model="fmnist-cnn", phase="finetune", batch_size=64, finetune_epochs=30,
        finetune_patience=3, finetune_solver=ADAM.format(lr=0.001),
        reported="001: > 90% (model 3: lr 1e-5, batch 1000, 100 epochs)"),
    "fashion-mnist-mlp": dict(
        dataset="fashion-mnist", model="mlp", phase="finetune", batch_size=1000, finetune_epochs=40,
        finetune_patience=5, finetune_solver=ADAM.format(lr=0.001), reported="001: below the CNN"),
}
