"""What `transfer` knows, as the tables `transfer list` prints; one recipe's full settings (`transfer show`);
and settings read from a JSON or YAML file (`--config`, which also takes a run's own config.json back)."""
from dataclasses import asdict

from tools.run.errors import unknown

from .config import FinetuneConfig

# what a run's config.json holds beside its settings: read back, these are ignored
# (and `transfer show`'s recipe name and reported figure)
RECORD_EXTRAS = ("classes", "input_size", "mean", "std", "backbone", "phases", "input", "recipe", "reported")


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def list_text():
    from .backbones import BACKBONES
    from .datasets import DATASETS, EXPECTED
    from .downloads import ENV_FOLDER, FASHION_MNIST_DEBIAN, found_folder
    from .recipes import RECIPES
    data = []
    for name in sorted(DATASETS):
        if name == "fashion-mnist":
            found = found_folder()
            here = f"yes: {found[0]}" if found else "no (make demo downloads it; or apt-get install dataset-fashion-mnist)"
            data.append([name, f"--data-root, ${ENV_FOLDER}, {FASHION_MNIST_DEBIAN} or the download cache: "
                               f"{EXPECTED[name]}", here])
        else:
            data.append([name, f"--data-root: {EXPECTED[name]}", "give --data-root"])
    models = [[name, meta.get("input_size", ""), meta.get("what", "")]
              for name, (fn, meta) in sorted(BACKBONES.items())]
    recipes = [[name, r["dataset"], r["model"], r["reported"]] for name, r in RECIPES.items()]
    return "\n\n".join([
        _table(["DATASET", "WHERE IT IS READ FROM", "HERE"], data),
        _table(["MODEL", "INPUT PX", "WHAT"], models),
        _table(["RECIPE", "DATASET", "MODEL", "REPORTED"], recipes),
        "REPORTED: the test accuracy the original report of that experiment (its dataset and model) gave; a "
        "target to compare with, not a result of this code. `transfer show RECIPE` prints a recipe's settings."])


def recipe_named(name):
    """A copy of recipe `name`'s entry; a name not among them is one line, with the nearest name."""
    from .recipes import RECIPES
    if name not in RECIPES:
        raise unknown("recipe", name, RECIPES, see="see `transfer list`")
    return dict(RECIPES[name])


def recipe_settings(name):
    """A recipe's full settings (every FinetuneConfig field), as `transfer run` would use them."""
    recipe = recipe_named(name)
    reported, then = recipe.pop("reported", None), recipe.pop("then", None)
    settings = asdict(FinetuneConfig(**dict(recipe, out="OUT")))
    for k in ("out", "resume", "progress"):
        settings.pop(k)
    out = dict(recipe=name, reported=reported, **settings)
    if then:  # not a setting: `transfer run` alone runs the second stage
        out["then"] = dict(then, note="stage 2 starts from stage 1's model.pt; `transfer run` runs both")
    return out


def read_settings(path):
    """FinetuneConfig fields from a JSON or YAML file (a run's config.json is one); unknown keys are an error."""
    from tools.run.settings import read_settings as read
    return read(path, FinetuneConfig, extras=RECORD_EXTRAS, refuse={"then": "a two-stage recipe ('then'); run it "
                                                                           "with `transfer run RECIPE`"},
                shown_by="`transfer show RECIPE`")
