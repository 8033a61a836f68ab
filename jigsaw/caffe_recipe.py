"""Which puzzles a Caffe CFN was trained with: the header our train_val files carry, or the jigsaw fork's own
data layers (jps: its Data layer; jps++: MergeData), read from the train_val beside a .caffemodel."""
import glob
import json
import os
from dataclasses import asdict
from typing import Optional, Tuple

from tools.run.atomic import read_bounded
from tools.run.errors import UserError, unknown

from .recipes import RECIPES, RECORD_OPTIONS, PuzzleConfig, recipe_record
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
    paper and bbrattoli puzzles without our header; a net that is not a CFN's)."""
    text = read_bounded(train_val, MAX_TRAIN_VAL, "train_val prototxt").decode("utf-8", "replace")
    for line in text.splitlines()[:5]:
        if line.startswith(HEADER):
            name, _, options = line[len(HEADER):].strip().partition(" ")
            if name not in RECIPES:
                raise unknown("recipe", name, RECIPES, see=f"named by {train_val}")
            return name, _checked_options(train_val, name, options)
    from tools.caffe.prototxt import read_net
    layers = read_net(train_val).layer
    if any(layer.type == "MergeData" for layer in layers):
        return "jps++", {}
    # the fork's Data layer: siamese_size tiles of patch_size (an ImageNet train_val's Data layer has neither)
    if any(layer.type == "Data" and layer.transform_param.siamese_size > 1 for layer in layers):
        return "jps", {}
    return None


def _checked_options(train_val: str, name: str, text: str) -> dict:
    """The header's options, exactly as `recipe_record` makes them for a run, or one line saying what is wrong."""
    try:
        options = json.loads(text) if text else {}
    except ValueError:
        options = None
    if not isinstance(options, dict) or not set(options) <= set(RECORD_OPTIONS):
        raise UserError(f"{train_val}: the options after recipe {name!r} are not a JSON mapping of "
                        f"{', '.join(RECORD_OPTIONS)}: {text[:80]!r}")
    try:
        _, record = recipe_record(name, options.get("gray_prob", 0.0), options.get("donor", "same"),
                                  options.get("cell"), options.get("tile"))
    except (TypeError, ValueError) as e:  # a UserError says itself; a wrong type is said here
        raise UserError(f"{train_val}: recipe {name!r} with options {options}: {e}") from None
    if record["recipe_options"] != options:
        raise UserError(f"{train_val}: recipe {name!r} with options {options}: not what a run records "
                        f"({record['recipe_options']})")
    return options
