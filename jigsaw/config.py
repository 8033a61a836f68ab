"""The settings of a `jigsaw train` run: one dataclass whose fields are the command line's options too
(tools.run.options), recorded in the run folder's config.json and read back by `--resume`."""
import os
from dataclasses import dataclass
from typing import Optional

from tools.nets import TRUNK_NAMES
from tools.run.cli_runner import (COUNT, COUNT_1, FRACTION, MAX_BATCH, MAX_SIDE, MAX_WORKERS, SEED, positive,
                                  ranged)
from tools.run.errors import UserError
from tools.run.options import check_settings, check_types, option, solver_override
from tools.run.folder import RunFolder
from tools.run.runrecord import RESUME_CHOICES, RESUME_HELP, check_fixed
from tools.run.runtime import PRECISIONS

from .architecture import DROPOUT
from .layouts import LAYOUTS
from .recipes import DEFAULT as DEFAULT_RECIPE
from .recipes import recipe

METHODS = ("jigsaw", "pirl")  # the pretext methods by name; jigsaw/methods.py builds each

MIN_SIDE = 64  # `jigsaw prepare`: images with a shorter side below this are junk unless the caller says otherwise
DEFAULT_SOLVER = "cfn_solver"  # shipped: prototxt/cfn_solver.prototxt, found by name (prototxt.find_solver)
RECIPE_HELP = ("puzzles: jps (the authors' released data layer), jps++ (MergeData, MVN x50), paper (per-tile "
               "mean, random crop), bbrattoli (per-tile mean/std); README: Recipes")


@dataclass
class PermutationsConfig:
    output: str = option(help=".npy (0-indexed), .bin (original, 1-indexed) or .h5", flag=("-o", "--output"))
    n: int = option(1000, "how many permutations (9! = 362,880 exist)", type=ranged(int, 1, 362880), flag="-n")
    seed: int = option(0, "seed for the first permutation", type=SEED)
    criterion: str = option("mean", "maximise the mean distance to the set (paper) or the minimum",
                            choices=("mean", "min"))

    def __post_init__(self):
        check_settings(self)


@dataclass
class PrepareConfig:
    source: str = option(help="folder of images (searched recursively), or a Caffe LMDB of Datum records (raw "
                              "or encoded)", flag="source")
    output: str = option(help="store to write, e.g. store.h5", flag=("-o", "--output"))
    list: Optional[str] = option(None, "Caffe-style list file ('relative/path [label]' lines) instead of a search")
    layout: str = option("jps", "jps (recipes jps, jps++): the fork's generate_jps_dataset form, shorter side 256 "
                                "with OpenCV-bilinear geometry, centre 255 crop (+2 px it reads past); square "
                                "(recipes paper, bbrattoli): --size squares, PIL bilinear", choices=LAYOUTS)
    size: int = option(256, "side of the stored squares in the square layout", type=positive(int, hi=MAX_SIDE))
    workers: Optional[int] = option(None, "decoding processes (default: all cores)", type=positive(int, hi=MAX_WORKERS))
    min_side: int = option(MIN_SIDE, "skip images whose shorter side is below this, as junk (lower it for "
                                     "small-image sets such as 28 px Fashion-MNIST, upscaled with --size)",
                           type=positive(int, hi=MAX_SIDE))
    progress: bool = option(True, "no progress bar")

    def __post_init__(self):
        check_settings(self)


@dataclass
class EvaluateConfig:
    weights: str = option(help="checkpoint .pt from `jigsaw train` or a CFN .caffemodel")
    data: str = option(help="store (.h5) or image folder")
    permutations: Optional[str] = option(None, "permutation file (needed with a .caffemodel)")
    recipe: Optional[str] = option(None, "puzzles for a .caffemodel (default jps); a checkpoint's own is used")
    batch_size: int = option(64, "puzzles per forward pass", type=positive(int, hi=MAX_BATCH))
    repeats: int = option(1, "puzzles per image", type=positive(int, hi=1000))
    seed: int = option(0, "seed of the puzzles drawn", type=SEED)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")

    def __post_init__(self):
        check_settings(self)


@dataclass
class ConvertConfig:
    source: str = option(help="checkpoint .pt (to Caffe) or .caffemodel (to a checkpoint)", flag="source")
    output: str = option(help="stem for NAME.prototxt + NAME.caffemodel, or a .pt", flag=("-o", "--output"))
    prototxt: Optional[str] = option(None, "the .caffemodel's net (optional, checked against the weights)")
    permutations: Optional[str] = option(None, "permutation file to store with a converted .caffemodel")
    recipe: Optional[str] = option(None, "the recipe a .caffemodel was trained with, recorded in the checkpoint "
                                         "(default jps, the original release's)")

    def __post_init__(self):
        check_settings(self)


@dataclass
class TrainConfig:
    out: str = option(help="run folder: config, logs, checkpoints, plots")
    data: Optional[str] = option(None, "prepared store (.h5) or image folder (with --resume: the recorded one)")
    permutations: Optional[str] = option(None, "permutation file (.npy, .bin, .h5) (with --resume: the "
                                               "recorded one)")
    solver: str = option(DEFAULT_SOLVER, "solver.prototxt, or a shipped one by name: cfn_solver (Caffe's SGD, the "
                                         "paper's 350,000 iterations), cfn_solver_short (Adam, 5,000)")
    val_data: Optional[str] = option(None, "separate validation store; default: hold out --val-fraction")
    val_fraction: float = option(0.05, "share of the images held out for validation", type=FRACTION)
    batch_size: int = option(256, "puzzles per iteration", type=positive(int, hi=MAX_BATCH))
    trunk: str = option("cfn", "the net: cfn (the 2016 CFN, exact to Caffe) or a torchvision trunk under "
                               "VISSL's head (tiles folded into one batch, one BatchNorm over all positions)",
                        choices=("cfn",) + TRUNK_NAMES)
    method: str = option("jigsaw", "jigsaw: classify the permutation; pirl (a torchvision --trunk): an image and "
                                   "its shuffled tiles embedded alike, NCE against a memory bank (no permutation "
                                   "set)", choices=METHODS)
    width: float = option(1.0, "channel width multiplier (cfn, resnet18/50, mobilenet_v3_large)",
                          type=ranged(float, 1 / 96, 16))
    pirl_image_size: Optional[int] = option(None, "pirl: side of the image view (default: the tile side)",
                                            type=positive(int, hi=MAX_SIDE))
    pirl_negatives: int = option(32000, "pirl: negatives per step (one set shared by the batch; at most the "
                                        "bank's size)", type=positive(int, hi=10 ** 7))
    pirl_loss: str = option("nce", "pirl: nce (the paper's, VISSL's default: NCE with Z fixed at the first step) or "
                                   "infonce (VISSL's loss_type cross_entropy: softmax over the positive and the "
                                   "negatives; learns on small image sets where nce stalls, see RESULTS.md)",
                            choices=("nce", "infonce"))
    pirl_temperature: float = option(0.07, "pirl: NCE temperature", type=ranged(float, 1e-3, 10))
    pirl_lambda: float = option(0.5, "pirl: weight of the tiles' NCE term (1 - it: the image's)", type=FRACTION)
    pirl_momentum: float = option(0.5, "pirl: memory bank m <- momentum m + (1 - momentum) f", type=FRACTION)
    dropout: float = option(DROPOUT, "dropout after fc6/fc7", type=FRACTION)
    init: str = option("caffe", "Caffe's fillers, or He init with zero biases scaled to the tiles, for a faster "
                                "start with Adam (--solver cfn_solver_short)",
                       choices=("caffe", "msra"))
    seed: int = option(0, "seed for everything random", type=SEED)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    precision: str = option("auto", "auto: bf16 autocast + channels_last on CUDA, fp32 elsewhere",
                            choices=PRECISIONS)
    compile: Optional[str] = option(None, "torch.compile the model; MODE: default, reduce-overhead (CUDA "
                                          "graphs), max-autotune", nargs="?", const="default", metavar="MODE")
    log_every: int = option(20, "iterations per log flush; the GPU is waited for only then", type=COUNT_1)
    recipe: str = option(DEFAULT_RECIPE, RECIPE_HELP)
    gray_prob: float = option(0.0, "paper / bbrattoli: probability of a grayscale image (jps draws its own)",
                             type=ranged(float, 0, 1))
    donor: str = option("same", "jps++: tiles substituted from a second puzzle of the same image (the fork's "
                                "code) or of another image in the batch (the 2018 paper's text)",
                        choices=("same", "other"))
    cell: Optional[int] = option(None, "another grid, e.g. for small images: cells of CELL px (crop 3 x CELL), "
                                       "tiles of --tile px at offsets 0..CELL-TILE; the CFN takes TILE px tiles "
                                       "(jps: 85 and 64)", type=positive(int, hi=MAX_SIDE))
    tile: Optional[int] = option(None, "tile side in px with --cell (README: Small images)",
                                 type=positive(int, hi=MAX_SIDE))
    workers: int = option(0, "decoding processes for an image folder", type=positive(int, zero=True, hi=MAX_WORKERS))
    decode: str = option("cpu", "image folder: PIL in --workers processes (cpu), or torchvision.io on the "
                                "training device, nvJPEG on CUDA (device)", choices=("cpu", "device"))
    max_iter: Optional[int] = option(None, "override the solver's max_iter", type=COUNT_1)
    test_interval: Optional[int] = option(None, "override the solver's test_interval (0: never)", type=COUNT)
    test_iter: Optional[int] = option(None, "override the solver's test_iter", type=COUNT)
    snapshot: Optional[int] = option(None, "override the solver's snapshot (0: only at the end)", type=COUNT)
    display: Optional[int] = option(None, "override the solver's display", type=COUNT)
    base_lr: Optional[float] = solver_override("base_lr")
    weight_decay: Optional[float] = solver_override("weight_decay")
    momentum: Optional[float] = solver_override("momentum")
    monitor: Optional[str] = option(None, "every test interval, the kNN accuracy of each conv layer on a small "
                                          "labelled set of this `transfer` dataset (e.g. fashion-mnist), in "
                                          "val.csv and curves.png; its labels are used by the kNN vote only")
    monitor_root: Optional[str] = option(None, "the --monitor dataset's folder (as `transfer --data-root`)")
    monitor_labels_per_class: int = option(50, "the monitor's bank: labelled training images per class",
                                           type=positive(int, hi=10 ** 5))
    monitor_queries: int = option(500, "the monitor's queries: images of the dataset's test split",
                                  type=positive(int, hi=10 ** 6))
    monitor_size: Optional[int] = option(None, "side the monitor's images are resized to (default: the tile size; "
                                               "as `transfer probe --input-size`, e.g. the store's side for small "
                                               "upscaled images)", type=positive(int, hi=MAX_SIDE))
    monitor_features: str = option("standardised", "what the monitor's cosine compares (`transfer probe "
                                                   "--knn-features`)", choices=("centred", "standardised", "raw"))
    tensorboard: bool = option(False, "also log the scalars for TensorBoard in OUT/tensorboard")
    resume: Optional[str] = option(None, RESUME_HELP, nargs="?", const="yes", choices=RESUME_CHOICES,
                                   metavar="auto")
    progress: bool = option(True, "no progress bar")

    def __post_init__(self):
        check_settings(self)  # however the settings came: options, a file, a record
        recipe(self.recipe)  # a misspelt name is said before any file is opened
        if self.method == "pirl" and self.trunk == "cfn":
            raise UserError("--method pirl: give a torchvision --trunk (resnet18, resnet50, mobilenet_v3_large, "
                            "vgg16); the CFN trunk is trained by the jigsaw method")
        if self.tile is not None and self.cell is None:
            raise UserError(f"--tile {self.tile}: a tile size goes with --cell (another grid); the recipe's own "
                            "grid has its own tile")


# Settings a resumed run must share with its start: they decide the puzzles, the batches, the
# architecture or the replayed random streams. The rest (iterations, logging, device, workers, the
# data's path, base_lr after a divergence) may change, and each resume is recorded beside config.json.
FIXED_ON_RESUME = ("trunk", "method", "pirl_image_size", "pirl_negatives", "pirl_loss", "pirl_temperature",
                   "pirl_lambda", "pirl_momentum", "recipe", "gray_prob", "donor", "cell", "tile", "width", "dropout",
                   "init", "seed", "batch_size", "val_fraction", "val_data")
# what config.json records of a run (resume and progress are how it was invoked, not what it is)
RUN_FIELDS = tuple(f for f in TrainConfig.__dataclass_fields__ if f not in ("resume", "progress"))
# what config.json holds beside the settings, and `jigsaw show`'s puzzles: ignored when read as --config
RECORD_EXTRAS = ("world_size", "start_iter", "images", "data_fingerprint", "puzzles")


def read_train_settings(path):
    """TrainConfig fields from a --config file (JSON or YAML; `jigsaw show RECIPE`'s output, or a run's config.json)."""
    from tools.run.settings import read_settings
    return read_settings(path, TrainConfig, extras=RECORD_EXTRAS, shown_by="`jigsaw show RECIPE`")


def recipe_settings(name):
    """A recipe's full `jigsaw train` settings (the defaults, --data / --permutations / --out to give) and, for
    reading only, its puzzles (`puzzles`: the recipe's PuzzleConfig)."""
    from dataclasses import asdict
    settings = asdict(TrainConfig(out="OUT", recipe=name))
    for k in ("out", "resume", "progress"):
        settings.pop(k)
    return dict(settings, puzzles=asdict(recipe(name)))


def recorded_config(out):
    """The settings a run folder's config.json recorded (TrainConfig fields but the machine's), or {}."""
    return check_types(TrainConfig, RunFolder(out, "jigsaw train").recorded(RUN_FIELDS, machine=("device", "workers")),
                       os.path.join(out, "config.json"))


def check_resume(cfg, recorded, out):
    """One line, before anything is opened, when `cfg` changes a setting the run in `out` fixed."""
    check_fixed(cfg, recorded, out, FIXED_ON_RESUME)
