"""Which puzzles a Caffe CFN was trained with: the header our train_val files carry, or the jigsaw fork's own
data layers (jps: its Data layer; jps++: MergeData), read from the train_val beside a .caffemodel."""
import glob
import json
import os
from dataclasses import asdict
from typing import Optional, Tuple

from tools.run.atomic import read_bounded
from tools.run.errors import UserError

from .recipes import RECIPES, PuzzleConfig
from .recipes import recipe as get_recipe

HEADER = "# jigsaw recipe: "
MAX_TRAIN_VAL = 16 << 20


def recipe_header(cfg: PuzzleConfig) -> str:
    """The comment line a train_val starts with: the recipe and the options that differ from its own."""
    base = get_recipe(cfg.recipe)
    options = {k: v for k, v in asdict(cfg).items() if getattr(base, k) != v}
    return f"{HEADER}{cfg.recipe}" + (f" {json.dumps(options, sort_keys=True)}" if options else "") + "\n"


def train_val_beside(caffemodel: str) -> Optional[str]:
    """STEM_train_val.prototxt beside STEM.caffemodel, else the one *train_val*.prototxt in its folder."""
    stem = os.path.splitext(caffemodel)[0]
    if os.path.isfile(stem + "_train_val.prototxt"):
        return stem + "_train_val.prototxt"
    found = sorted(glob.glob(os.path.join(glob.escape(os.path.dirname(os.path.abspath(caffemodel))),
                                          "*train_val*.prototxt")))
    return found[0] if len(found) == 1 else None


def recipe_in(train_val: str) -> Optional[Tuple[str, dict]]:
    """(recipe name, options) a train_val was written for, or None when it does not say (Input layers: the
    paper and bbrattoli puzzles without our header)."""
    text = read_bounded(train_val, MAX_TRAIN_VAL, "train_val prototxt").decode("utf-8", "replace")
    for line in text.splitlines()[:5]:
        if line.startswith(HEADER):
            name, _, options = line[len(HEADER):].strip().partition(" ")
            if name not in RECIPES:
                raise UserError(f"{train_val}: names recipe {name!r}, not one of {', '.join(RECIPES)}")
            try:
                return name, json.loads(options) if options else {}
            except ValueError:
                raise UserError(f"{train_val}: the recipe options after {name!r} are not JSON") from None
    from tools.caffe.prototxt import read_net
    types = {layer.type for layer in read_net(train_val).layer}
    if "MergeData" in types:
        return "jps++", {}
    if "Data" in types:
        return "jps", {}
    return None
