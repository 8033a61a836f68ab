"""Each reproduced experiment as a recipe, named by its dataset and model; `transfer run NAME` uses them. A
recipe may name a second stage (`then`) that starts from the first stage's model. Figures in `reported` are
the original reports' own: targets to compare with, not copied results."""
from .config import FINETUNE_SOLVER, HEAD_SOLVER

ADAM = 'type: "Adam" base_lr: {lr} momentum: 0.9 momentum2: 0.999 lr_policy: "fixed"'

RECIPES = {
    # Seed 000 (Keras): BaseNet / BaseNet++ on a 25-class CIFAR-100 subset; ResNet50 on CUB-200 (V0, V4).
    "cifar25-basenet": dict(
        dataset="cifar100-25", model="basenet", phase="finetune", batch_size=64, finetune_epochs=50,
        finetune_patience=50, val_fraction=0.10, finetune_solver=ADAM.format(lr=0.001),
        reported="41.36% (mean of 3 runs)"),
    "cifar25-basenet++": dict(
        dataset="cifar100-25", model="basenet++", phase="finetune", batch_size=64, finetune_epochs=50,
        finetune_patience=50, val_fraction=0.10, finetune_solver=ADAM.format(lr=0.001),
        augment=dict(rotation=10, hflip=True, shift=0.2), reported="66.25% (mean of 3 runs)"),
    "cub200-resnet50-v0": dict(
        dataset="cub200", model="resnet50", phase="head", head="linear", batch_size=32, head_epochs=15,
        head_solver=ADAM.format(lr=0.001), reported="42.57% (variant V0: the frozen base, a linear head)"),
    "cub200-resnet50-v4": dict(
        dataset="cub200", model="resnet50", phase="both", head="1024,dropout:0.5,512", batch_size=32,
        head_epochs=15, finetune_epochs=15, unfreeze=("layer4",), head_solver=ADAM.format(lr=0.0001),
        finetune_solver=ADAM.format(lr=0.00001), augment=dict(rotation=10, hflip=True, shift=0.1),
        reported="50.18% (variant V4: a frozen warm-up, then the last stage unfrozen)"),
    # Seed 001 (PyTorch): CNN vs one-hidden-layer MLP on Fashion-MNIST.
    "fashion-mnist-cnn": dict(
        dataset="fashion-mnist", model="fmnist-cnn", phase="finetune", batch_size=64, finetune_epochs=30,
        finetune_patience=3, finetune_solver=ADAM.format(lr=0.001),
        reported="> 90% (the report's model 3: lr 1e-5, batch 1000, 100 epochs)"),
    "fashion-mnist-mlp": dict(
        dataset="fashion-mnist", model="mlp", phase="finetune", batch_size=1000, finetune_epochs=40,
        finetune_patience=5, finetune_solver=ADAM.format(lr=0.001), reported="below the CNN (fashion-mnist-cnn)"),
    # Seed 002 (Keras): cats vs dogs with MobileNet; EMNIST letters -> MNIST transfer of a small CNN.
    "cats-vs-dogs-mobilenet": dict(
        dataset="cats-vs-dogs", model="mobilenet_v2", phase="both", input_size=128, batch_size=32,
        head="dropout:0.2", head_epochs=50, finetune_epochs=10, head_solver=ADAM.format(lr=0.001),
        finetune_solver=ADAM.format(lr=0.00001), augment=dict(rotation=20, hflip=True, shift=0.1),
        reported="96% test"),
    "emnist-to-mnist": dict(
        dataset="emnist-letters", model="emnist-cnn", phase="finetune", batch_size=128, finetune_epochs=10,
        finetune_patience=2, finetune_solver=ADAM.format(lr=0.001),
        then=dict(dataset="mnist", phase="head", limit_train=1000, head_epochs=30, head_patience=5,
                  head_solver=ADAM.format(lr=0.001)),
        reported="91% on EMNIST letters; conv layers frozen, dense layer retrained on 1,000 MNIST "
                 "images: 87%"),
    # Seed 003 (Caffe): a CFN branch fine-tuned on CIFAR-100 and Fruits-360, head phase then all; inputs
    # standardised by the training split's per-channel statistics, as that report did.
    "cifar100-cfn": dict(
        dataset="cifar100", model="cfn", phase="both", batch_size=128, input_norm="dataset", head_epochs=200,
        head_patience=5,
        finetune_epochs=50, finetune_patience=1, head_solver=HEAD_SOLVER, finetune_solver=FINETUNE_SOLVER,
        reported="head 37.66% (64 epochs), fine-tune 52.7% (15 epochs)"),
    "fruits360-cfn": dict(
        dataset="fruits360", model="cfn", phase="both", batch_size=128, input_norm="dataset", head_patience=5,
        finetune_patience=1,
        finetune_solver=FINETUNE_SOLVER.replace("base_lr: 0.0005", "base_lr: 0.0003").replace(
            "stepsize: 2000", "stepsize: 4000"),
        reported="81 classes, 1 image in 4; head 91% (98 epochs), fine-tune 96.91% (15 epochs)"),
    # Seed 004 (Keras, R): blood-cell images, a small CNN with RMSprop and augmentation; VGG16 base.
    "blood-cells-cnn": dict(
        dataset="blood-cells", model="blood-cnn", phase="finetune", batch_size=32, finetune_epochs=30,
        finetune_patience=5, augment=dict(rotation=10, hflip=True, shift=0.3, shear=0.3, zoom=0.2),
        finetune_solver='type: "RMSProp" base_lr: 0.0001 rms_decay: 0.9 lr_policy: "fixed"',
        reported="0.91 (RMSprop), 0.921 with augmentation"),
    "blood-cells-vgg16": dict(
        dataset="blood-cells", model="vgg16", phase="both", input_size=150, batch_size=20, head="512",
        head_epochs=20, finetune_epochs=6, finetune_solver='type: "RMSProp" base_lr: 0.00001 lr_policy: "fixed"',
        reported="runs crashed on the authors' hardware after 4-6 epochs"),
}
