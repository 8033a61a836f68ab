"""What `transfer` knows, as the tables `transfer list` prints; one recipe's full settings (`transfer show`);
and settings read from a JSON or YAML file (`--config`, which also takes a run's own config.json back)."""
import json
import os
from dataclasses import asdict, fields

from tools.run.errors import UserError
from tools.run.options import check_types
from tools.run.paths import user_file

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
    from .datasets import DATASETS, EXPECTED, FASHION_MNIST_DEBIAN
    from .recipes import RECIPES
    data = []
    for name in sorted(DATASETS):
        if name == "fashion-mnist":
            here = "yes" if os.path.isdir(FASHION_MNIST_DEBIAN) else "no (apt-get install dataset-fashion-mnist)"
            data.append([name, f"{FASHION_MNIST_DEBIAN} or --data-root: {EXPECTED[name]}", here])
        else:
            data.append([name, f"--data-root: {EXPECTED[name]}", "give --data-root"])
    models = [[name, meta.get("input_size", ""), meta.get("what", "")]
              for name, (fn, meta) in sorted(BACKBONES.items())]
    recipes = [[name, r["dataset"], r["model"], r["reported"]] for name, r in RECIPES.items()]
    return "\n\n".join([
        _table(["DATASET", "WHERE IT IS READ FROM", "HERE"], data),
        _table(["MODEL", "INPUT PX", "WHAT"], models),
        _table(["RECIPE", "DATASET", "MODEL", "REPORTED"], recipes),
        "REPORTED: the figure of the seed report the recipe reproduces (\"003\" is seed report 003, "
        "shared/seeds/003_*.txt; SEEDS.md); a target to compare with. `transfer show RECIPE` prints its settings."])


def recipe_settings(name):
    """A recipe's full settings (every FinetuneConfig field), as `transfer run` would use them."""
    from .recipes import RECIPES
    if name not in RECIPES:
        raise UserError(f"unknown recipe '{name}' (see `transfer list`)")
    recipe = dict(RECIPES[name])
    reported, then = recipe.pop("reported", None), recipe.pop("then", None)
    settings = asdict(FinetuneConfig(**dict(recipe, out="OUT")))
    for k in ("out", "resume", "progress"):
        settings.pop(k)
    out = dict(recipe=name, reported=reported, **settings)
    if then:  # not a setting: `transfer run` alone runs the second stage
        out["then"] = dict(then, note="stage 2 starts from stage 1's model.pt; `transfer run` runs both")
    return out


MAX_SETTINGS_BYTES = 1 << 20


def read_settings(path):
    """FinetuneConfig fields from a JSON or YAML file (a run's config.json is one); unknown keys are an error."""
    user_file(path, "settings file (.json or .yaml)")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SETTINGS_BYTES + 1)
    except OSError as e:
        raise UserError(f"{path}: cannot read the settings file ({e.strerror or e})") from None
    if len(raw) > MAX_SETTINGS_BYTES:
        raise UserError(f"{path}: over {MAX_SETTINGS_BYTES >> 10} KiB; a settings file is a few lines")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}); a settings file is JSON or YAML") from None

    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UserError(f"{path}: YAML needs PyYAML (pip install pyyaml), or give the settings as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        except RecursionError:  # the parsers recurse per level: a hostile file nests until the stack ends
            raise UserError(f"{path}: nested deeper than the YAML reader goes") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise UserError(f"{path}: not valid JSON ({e})") from None
        except RecursionError:
            raise UserError(f"{path}: nested deeper than the JSON reader goes") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    if "then" in data:
        raise UserError(f"{path}: a two-stage recipe ('then'); run it with `transfer run RECIPE`")
    known = {f.name for f in fields(FinetuneConfig)}
    unknown = sorted(k for k in data if k not in known and k not in RECORD_EXTRAS)
    if unknown:
        raise UserError(f"{path}: unknown setting(s) {', '.join(unknown)} (settings are FinetuneConfig's "
                        "fields, as `transfer show RECIPE` prints them)")
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
                if k in known and k not in ("resume", "progress")}
    return check_types(FinetuneConfig, settings, path)
