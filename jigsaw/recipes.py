"""The named puzzle recipes: the authors' released code (`jps`, `jps++`) and two PyTorch-era ones.

File and line references are to MehdiNoroozi/JigsawPuzzleSolver (caffe-master-jps++/ for the C++):
`data_transformer.cpp` (DT), `layers/merge_data_layer.cpp` (MD), `generate_jps_dataset.cpp` (GEN).

jps (default; train_val_cfn_jps.prototxt):
  data    GEN 216-233: shorter side to 256 with OpenCV's bilinear resize (other side
          `(float)long/short*256` truncated), then the centre 255x255 crop; `prepare --layout jps`.
  crop    DT 185-196: crop_size 255 of a 255 datum, so offset 0 in TRAIN and TEST.
  cells   DT 85-97: cell (i, j) at x = j*255/3, y = i*255/3 (row-major, 85 px); position s shows
          cell H[s] of the label's permutation (DT 168-172).
  offsets DT 202-207: per position one offset 0..21 in x and y, then per colour channel an extra
          rand()%3 in x and in y: the channels of a tile are misregistered by 0-2 px.
  values  DT 240-254: BGR, 0-255, minus mean_value 104/117/123 (the per-tile mean, DT 212-218, is
          commented out there).
  colour  DT 262-302, per puzzle, TRAIN and TEST: gray (rand()%10 >= 5, 1/2): 0.3333(b+g+r) in all
          three channels; else projection (rand()%2 == 0, 1/4): r' = .8333r+.3333g-.1667b,
          g' = .3333(r+g+b), b' = -.1667r+.3333g+.8333b; else untouched (1/4).
jps++ (train_val_cfn_jps++.prototxt): as jps with jitter 18 (lines 16, 41), no mean values, then
  MergeData (lines 150-190, MD 56-84): per puzzle rand()%3 tiles (0-2) at distinct random positions
  replaced by tiles from distinct random positions of a second puzzle, label unchanged; that puzzle
  is the second Data layer's (lines 50-96): no hash file, so grid order, with its own offsets and
  colour. Both Data layers read the same LMDB in step (separate readers; `rand_jump` is parsed and
  never used), so it is a second puzzle of the same image (`donor="same"`); the 2018 paper describes
  tiles of another image (`donor="other"`). Then per tile MVN across channels (eps 1e-9) and x50
  (Power, lines 198-213 and repeats). 701 permutations (permutations_701.bin).
paper: the ECCV paper's text as earlier versions of this project: 256x256 store, random 255 crop in
  training (centred in testing), per-position offsets 0..21, each tile minus its own channel means.
bbrattoli: paper with each tile channel also divided by its standard deviation (blank tiles safe).
"""
from dataclasses import dataclass, replace
from typing import Optional, Tuple

from tools.run.errors import UserError, unknown

GRID = 3  # a 3 x 3 puzzle


@dataclass(frozen=True)
class PuzzleConfig:
    """How puzzles are cut and normalised. Use `jigsaw.recipes.recipe(name)` for the named ones."""
    recipe: str = "custom"
    layout: str = "square"             # store layout read: "jps" (255 crop + 2 px margin) or "square"
    crop: int = 255
    cell: int = 85
    tile: int = 64
    jitter: int = 21                   # tile offset inside its cell: 0..jitter, per position
    channel_shift: int = 0             # extra offset 0..channel_shift per colour channel, x and y
    random_crop: bool = True           # training crops at random, testing centred; else offset 0
    mean_values: Optional[Tuple[float, float, float]] = None  # fixed B, G, R means removed
    per_tile: Optional[str] = "mean"   # None, "mean", "meanstd" (per channel) or "mvn" (across channels)
    mvn_eps: float = 1e-9
    scale: float = 1.0                 # multiplies the normalised values (jps++: Power scale 50)
    color: str = "luma"                # "jps": per puzzle gray 1/2, projection 1/4; "luma": gray_prob
    gray_prob: float = 0.0
    substitute: int = 0                # MergeData: rand() % substitute tiles replaced per puzzle
    donor: str = "same"                # whose grid-order puzzle supplies them: "same" image or "other"

    def __post_init__(self):
        if self.per_tile not in (None, "mean", "meanstd", "mvn"):
            raise ValueError(f"per_tile must be None, 'mean', 'meanstd' or 'mvn', got {self.per_tile!r}")
        if self.color not in ("jps", "luma") or self.donor not in ("same", "other"):
            raise ValueError("color must be 'jps' or 'luma' and donor 'same' or 'other'")
        if self.cell * GRID > self.crop or self.tile > self.cell:
            raise ValueError(f"3 cells of {self.cell} px must fit the {self.crop} px crop and hold "
                             f"a {self.tile} px tile")
        if self.substitute and self.random_crop:
            raise ValueError("MergeData substitution needs fixed crops (random_crop=False)")

    @property
    def reach(self):
        """Pixels read from a crop's corner: the farthest tile, offset and channel shift."""
        return (GRID - 1) * self.cell + self.jitter + self.channel_shift + self.tile

    def min_image(self):
        return max(self.crop, self.reach)


JPS_MEANS = (104.0, 117.0, 123.0)  # B, G, R (train_val_cfn_jps.prototxt lines 13-15)

RECIPES = {
    "jps": PuzzleConfig(recipe="jps", layout="jps", jitter=21, channel_shift=2, random_crop=False,
                        mean_values=JPS_MEANS, per_tile=None, color="jps"),
    "jps++": PuzzleConfig(recipe="jps++", layout="jps", jitter=18, channel_shift=2, random_crop=False,
                          per_tile="mvn", scale=50.0, color="jps", substitute=3),
    "paper": PuzzleConfig(recipe="paper", layout="square", per_tile="mean"),
    "bbrattoli": PuzzleConfig(recipe="bbrattoli", layout="square", per_tile="meanstd"),
}
DEFAULT = "jps"  # the authors' released data layer: what `jigsaw train` uses unless told


def recipe(name: str = DEFAULT, **overrides) -> PuzzleConfig:
    """The PuzzleConfig of recipe `name`, with options (e.g. gray_prob, donor) replaced."""
    if name not in RECIPES:
        raise unknown("recipe", name, RECIPES)
    try:
        return replace(RECIPES[name], **overrides)
    except (TypeError, ValueError) as e:
        raise UserError(f"recipe {name!r}: {e}") from None


def geometry(cell, tile):
    """Grid options for other image sizes, in the jps proportions: a crop of 3 cells, each tile at an
    offset 0..cell-tile inside its cell (jps: cell 85, tile 64, jitter 21)."""
    if tile < 16 or cell < tile:
        raise UserError(f"--cell {cell} --tile {tile}: need tile >= 16 px (the branch's conv1 is 11x11 "
                         "stride 2) and cell >= tile")
    return dict(crop=3 * cell, cell=cell, tile=tile, jitter=cell - tile)


# the options a run's record may hold (recipe_record): the grid's (geometry) and the two drawing options
RECORD_OPTIONS = ("cell", "crop", "donor", "gray_prob", "jitter", "tile")


def recipe_record(name: str, gray_prob: float = 0.0, donor: str = "same", cell: Optional[int] = None,
                  tile: Optional[int] = None) -> Tuple[PuzzleConfig, dict]:
    """(PuzzleConfig, record) for a run: the record (recipe name and the options that differ from
    the recipe's own) goes into config.json and every checkpoint, so nothing downstream guesses.
    `cell`/`tile` give another grid (`geometry`), e.g. for images far smaller than ImageNet's."""
    base = recipe(name)
    options = {}
    if cell is not None or tile is not None:
        grid = geometry(cell or base.cell, tile or base.tile)
        options.update({k: v for k, v in grid.items() if getattr(base, k) != v})
    if gray_prob:
        if base.color != "luma":
            raise UserError(f"--gray-prob applies to the paper and bbrattoli recipes; {name} draws "
                             "its own gray and colour projection")
        options["gray_prob"] = float(gray_prob)
    if donor != base.donor:
        if not base.substitute:
            raise UserError(f"--donor applies to jps++ (MergeData); {name} substitutes no tiles")
        options["donor"] = donor
    return recipe(name, **options), dict(recipe=name, recipe_options=options)


def recipe_of(record: dict, default: str = "paper") -> PuzzleConfig:
    """The recipe a checkpoint or config.json records; runs from before recipes existed used the
    paper recipe ('mean') or bbrattoli's ('meanstd')."""
    if record.get("recipe"):
        return recipe(record["recipe"], **dict(record.get("recipe_options") or {}))
    legacy = record.get("normalize")
    return recipe("bbrattoli" if legacy == "meanstd" else default)
