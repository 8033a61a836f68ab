"""The settings of `transfer finetune` / `transfer run` and `transfer probe`: dataclasses whose fields are
also the command lines' options (tools.run.options), recorded in each run folder's config.json."""
import argparse
from dataclasses import dataclass
from typing import Optional

from tools.run.cli_runner import COUNT, COUNT_1, FRACTION, MAX_BATCH, MAX_SIDE, MAX_WORKERS, SEED, positive, ranged
from tools.run.errors import UserError, unknown
from tools.run.options import check_settings, option, setting, solver_override
from tools.run.runrecord import RESUME_CHOICES, RESUME_HELP
from tools.run.runtime import PRECISIONS

# Seed 003's settings: head phase Adam 0.01, exp 0.9995/iteration, decay 1e-3, <= 200 epochs, patience 5;
# fine-tune phase Adam 5e-4, step gamma 0.2, decay 5e-4, <= 50 epochs, patience 1.
HEAD_SOLVER = 'type: "Adam" base_lr: 0.01 momentum: 0.9 lr_policy: "exp" gamma: 0.9995 weight_decay: 0.001'
FINETUNE_SOLVER = ('type: "Adam" base_lr: 0.0005 momentum: 0.9 lr_policy: "step" gamma: 0.2 stepsize: 2000 '
                   'weight_decay: 0.0005')
EPOCHS = positive(int, hi=10 ** 6)
AUGMENTATIONS = ("rotation", "hflip", "shift", "shear", "zoom")
# degrees, fractions of the side, degrees, a fraction of the scale (1 - zoom must stay positive)
AUGMENT_RANGES = {"rotation": ranged(float, 0, 180), "shift": ranged(float, 0, 1, hi_open=True),
                  "shear": ranged(float, 0, 90), "zoom": ranged(float, 0, 1, hi_open=True)}
FASHION_HELP = "dataset folder (Fashion-MNIST defaults to Debian's package)"


def augment_spec(text):
    """'rotation=10,hflip,shift=0.2' -> {'rotation': 10.0, 'hflip': True, 'shift': 0.2}."""
    out = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = part.partition("=")
        if key not in AUGMENTATIONS:
            raise argparse.ArgumentTypeError(f"unknown augmentation '{key}' ({', '.join(AUGMENTATIONS)})")
        if key == "hflip":
            out[key] = True
            continue
        try:
            out[key] = AUGMENT_RANGES[key](value)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"'{part}': {key} {e}") from None
    return out


def check_augment(augment, where="augment"):
    """The same rules on an augment mapping from a --config file or a run record."""
    if not isinstance(augment, dict):
        raise UserError(f"setting 'augment' is {augment!r}: expected a mapping such as {{\"zoom\": 0.2}}")
    for key, value in augment.items():
        if key not in AUGMENTATIONS:
            raise UserError(f"{where}: unknown augmentation '{key}' ({', '.join(AUGMENTATIONS)})")
        if key == "hflip":
            if not isinstance(value, bool):
                raise UserError(f"{where}: hflip is {value!r}; expected true or false")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: {key} is {value!r}; expected a number")
        else:
            AUGMENT_RANGES[key].range_check(f"augment.{key}", value)


LIMITS = {"train": "train on N images only: the first N of the training split after the validation split (15 %% "
                   "of it, a seeded shuffle) is cut from it; validation and test keep theirs",
          "val": "validate on N images only: the first N of the (seeded) validation split",
          "test": "test on N images only: a seeded sample of the test split (all: the figures the field reports; "
                  "fewer: a quicker look)"}


def split_limit(split):
    """--limit-train / --limit-val / --limit-test: each limits its own split (transfer/datasets.load_dataset)."""
    return option(None, LIMITS[split], type=COUNT_1)


def check_names(cfg):
    """The dataset and model named exist: a misspelling is one line with the nearest name, before anything runs."""
    from .backbones import BACKBONES
    from .datasets import DATASETS
    for what, name, known in (("dataset", cfg.dataset, DATASETS), ("model", cfg.model, BACKBONES)):
        if name not in known:
            raise unknown(what, name, known, see="see `transfer list`")


@dataclass
class LabelledRun:
    """The options `transfer finetune` (and `run`) and `transfer probe` share, declared once: the labelled data and
    its splits, the backbone's name, the output folder, the seed and the machine."""
    dataset: str = option(help="dataset name (see `transfer list`)")
    model: str = option(help="backbone name (see `transfer list`)")
    out: str = option(help="output folder: finetune's summary.json, history.csv, plots and checkpoints; probe's tables "
                           "(probe.csv, knn.csv, label_efficiency.csv, voc07.csv), plots, config.json and feature cache")
    data_root: Optional[str] = option(None, FASHION_HELP)
    limit_train: Optional[int] = split_limit("train")
    limit_val: Optional[int] = split_limit("val")
    limit_test: Optional[int] = split_limit("test")
    val_fraction: float = setting(0.15, type=FRACTION)
    seed: int = option(0, "seed for everything random", type=SEED)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    precision: str = option("auto", "auto: bf16 autocast + channels_last on CUDA (as jigsaw train), fp32 elsewhere; "
                                    "fp32 everywhere: full precision", choices=PRECISIONS)
    progress: bool = option(True, "no progress bar")

    def __post_init__(self):
        check_settings(self)  # however the settings came: options, a file, a record
        check_names(self)


@dataclass
class FinetuneConfig(LabelledRun):
    weights: Optional[str] = option(None, "backbone weights: jigsaw checkpoint / CFN .caffemodel (cfn), a local "
                                          ".pth or a torchvision weight name, or 'none' for random initialisation")
    phase: str = option("both", "head (backbone frozen), finetune (all unfrozen) or both, one after the other",
                        choices=("head", "finetune", "both"))
    head: str = option("linear", "'linear' or a spec like 1024,dropout:0.5,512")
    unfreeze: tuple = option((), "fine-tune only these backbone blocks", nargs="*")
    head_solver: str = option(HEAD_SOLVER, "solver.prototxt (or text) for the head phase")
    finetune_solver: str = option(FINETUNE_SOLVER, "solver.prototxt (or text) for the fine-tune phase")
    head_epochs: int = setting(200, type=EPOCHS)
    finetune_epochs: int = setting(50, type=EPOCHS)
    head_patience: int = setting(5, type=COUNT)
    finetune_patience: int = setting(1, type=COUNT)
    eps: float = setting(1e-4, type=positive(float, zero=True, hi=1e6))
    epochs: Optional[int] = option(None, "cap on the epochs of each phase", type=EPOCHS)
    base_lr: Optional[float] = solver_override("base_lr", "every phase's solver's")
    weight_decay: Optional[float] = solver_override("weight_decay", "every phase's solver's")
    momentum: Optional[float] = solver_override("momentum", "every phase's solver's")
    batch_size: int = option(128, "batch size", type=positive(int, hi=MAX_BATCH))
    labels_per_class: Optional[str] = option(None, "semi-supervised: train on a seeded class-balanced draw of N "
                                                   "labelled images per class (or a fraction of each class: 0.01, "
                                                   "1%%) of the training split; validation and test are untouched",
                                             metavar="N")
    label_draw: int = option(0, "which draw of --labels-per-class (0, 1, ...: fresh labelled subsets)",
                             type=COUNT)
    freeze_through: Optional[str] = option(None, "Noroozi & Favaro's Table 2: the backbone's blocks up to and "
                                                 "including this one (e.g. conv3) keep their weights and stay frozen; "
                                                 "the blocks after it start afresh (a twin's init, --twin-init, seeded "
                                                 "by --seed) and are trained with the head", metavar="BLOCK")
    twin_seed: Optional[int] = option(None, "fine-tune a random-init twin of --weights instead (the architecture, "
                                            "width and input scale of those weights, fresh weights from this seed), "
                                            "the baseline `transfer compare` sets the pretrained runs against",
                                      type=SEED)
    twin_init: str = option("msra", "the twin's init: msra (He, scaled to the input as `jigsaw train --init msra` "
                                    "does) or caffe (a CFN's fillers)", choices=("caffe", "msra"))
    input_size: Optional[int] = option(None, "resize images to this side (default: the model's)",
                                       type=positive(int, hi=MAX_SIDE))
    augment: dict = option(help="training augmentations, e.g. rotation=10,hflip,shift=0.2,shear=0.3,zoom=0.2",
                           type=augment_spec, metavar="SPEC", default_factory=dict)
    input_norm: str = option("backbone", "backbone: a CFN branch gets its recipe's input (BGR, 0-255, the "
                                         "recipe's normalisation), other models the training split's "
                                         "standardisation; dataset: that standardisation for every model "
                                         "(the CIFAR-100 / Fruits-360 CFN experiments)",
                             choices=("backbone", "dataset"))
    workers: int = option(0, "DataLoader workers", type=positive(int, zero=True, hi=MAX_WORKERS))
    tensorboard: bool = option(False, "also log the scalars for TensorBoard in OUT/tensorboard")
    resume: Optional[str] = option(None, RESUME_HELP, nargs="?", const="yes", choices=RESUME_CHOICES,
                                   metavar="auto")

    def __post_init__(self):
        super().__post_init__()
        check_augment(self.augment)


# Settings that decide what the run's weights, splits and epochs mean: a resume keeps them. The epoch
# caps and patience may change (each resume is recorded beside config.json), and so may the machine.
FIXED_ON_RESUME = ("dataset", "model", "weights", "phase", "head", "unfreeze", "head_solver", "finetune_solver",
                   "eps", "batch_size", "limit_train", "limit_val", "labels_per_class", "label_draw", "freeze_through",
                   "twin_seed", "twin_init", "val_fraction", "input_size", "augment", "input_norm", "seed")
# the solver fields an option overrides in every phase's solver (recorded in config.json as the options are)
SOLVER_OVERRIDES = ("base_lr", "weight_decay", "momentum")
# what config.json records of a run
RUN_FIELDS = tuple(f for f in FinetuneConfig.__dataclass_fields__ if f not in ("resume", "progress"))

# what `transfer run RECIPE` takes from the command line (the recipe sets the rest)
RUN_OPTIONS = ("out", "data_root", "weights", "epochs", "base_lr", "weight_decay", "momentum", "batch_size",
               "limit_train", "limit_val", "limit_test", "labels_per_class", "label_draw", "seed", "workers", "device",
               "resume", "progress")


@dataclass
class ProbeConfig(LabelledRun):
    weights: Optional[object] = option(None, "the pretrained weights (as for finetune); several runs that differ "
                                             "only in their seed give the pretrained column as mean ± SE", nargs="+")
    random_seeds: int = option(3, "random-init twins (seeded 1000, 1001, ...)", type=positive(int, hi=1000))
    twin_seeds: tuple = option((), "the twins' seeds instead (fresh twins: new seeds); recorded in config.json",
                               type=SEED, nargs="+")
    twin_init: str = option("caffe", "a CFN twin's init: caffe (the fillers its pretraining started from) or "
                                     "msra (He)", choices=("caffe", "msra"))
    protocols: tuple = option(("linear", "knn"), "linear: probes on every training label, weight decay chosen on "
                                                 "the validation split; knn: weighted kNN on the training split",
                              nargs="+", choices=("linear", "knn"))
    knn_k: int = option(20, "neighbours that vote (kNN)", type=positive(int, hi=10 ** 5))
    knn_temperature: float = option(0.07, "a neighbour's vote is exp(cosine similarity / T)",
                                    type=positive(float, hi=1e3))
    knn_features: str = option("centred", "what the kNN's cosine compares: the features minus the training split's "
                                          "mean (centred), z-scored by its mean and SD (standardised: the linear "
                                          "probe's view) or as they are (raw)",
                               choices=("centred", "standardised", "raw"))
    labels_per_class: tuple = option((), "low-shot budgets, e.g. 1 5 10 50 100 all: for each, --draws seeded "
                                         "class-balanced draws of labelled training images; a linear probe (weight "
                                         "decay by cross-validation inside the draw) and a kNN per draw",
                                     nargs="+", metavar="N")
    label_fraction: tuple = option((), "low-shot budgets as fractions of each class, e.g. 0.01 0.1 (or 1%% 10%%)",
                                   nargs="+", metavar="F")
    draws: int = option(5, "seeded labelled draws per low-shot budget", type=positive(int, hi=1000))
    cv_folds: int = option(3, "folds of the low-shot cross-validation (fewer when a class has fewer labels)",
                           type=ranged(int, 2, 1000))
    svm_costs: tuple = option((0.01, 0.1, 1.0, 10.0, 100.0), "a multi-label dataset (voc2007) is probed with "
                              "VOC07's linear SVMs per class (Goyal et al. 2019): their cost candidates, chosen by "
                              "--cv-folds cross-validation on trainval", type=positive(float), nargs="+")
    lowshot_weight_decays: tuple = option((1e-2, 1e-1, 1.0, 10.0, 100.0), "low-shot candidates, chosen by "
                                          "cross-validation in each draw", type=positive(float, zero=True), nargs="+")
    target_dim: int = option(9000, "features per layer after pooling", type=positive(int, hi=1 << 20))
    bn_images: int = option(2000, "a BatchNorm trunk's (pretrained and twins alike) running statistics are measured "
                                  "afresh on this many unlabelled training images at the probe's input size before "
                                  "it is probed; 0 keeps them", type=positive(int, zero=True, hi=10 ** 7))
    # 5,000 images x 9,000 features wants strong decay
    weight_decays: tuple = option((1e-3, 1e-2, 1e-1, 1.0, 10.0), "candidates, chosen on the validation split",
                                  type=positive(float, zero=True), nargs="+")
    lbfgs_iters: int = option(60, "L-BFGS iterations per fit", type=positive(int, hi=10 ** 5))
    batch_size: int = option(256, "images per forward pass", type=positive(int, hi=MAX_BATCH))
    input_size: Optional[int] = option(None, "side the images are resized to (default: the backbone's, a CFN's "
                                             "tile size)", type=positive(int, hi=MAX_SIDE))
