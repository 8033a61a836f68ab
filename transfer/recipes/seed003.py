"""Seed 003 (Caffe): a CFN branch fine-tuned on CIFAR-100 and Fruits-360, head phase then all; inputs
standardised by the training split's per-channel statistics, as that report did."""
from ..finetune import FINETUNE_SOLVER, HEAD_SOLVER

RECIPES = {
    "cifar100-cfn": dict(
        dataset="cifar100", model="cfn", phase="both", batch_size=128, input_norm="dataset", head_epochs=200,
        head_patience=5,
        finetune_epochs=50, finetune_patience=1, head_solver=HEAD_SOLVER, finetune_solver=FINETUNE_SOLVER,
        reported="003: head 37.66% (64 epochs), fine-tune 52.7% (15 epochs)"),
    "fruits360-cfn": dict(
        dataset="fruits360", model="cfn", phase="both", batch_size=128, input_norm="dataset", head_patience=5,
        finetune_patience=1,
        finetune_solver=FINETUNE_SOLVER.replace("base_lr: 0.0005", "base_lr: 0.0003").replace(
            "stepsize: 2000", "stepsize: 4000"),
        reported="003: 81 classes, 1 image in 4; head 91% (98 epochs), fine-tune 96.91% (15 epochs)"),
}
