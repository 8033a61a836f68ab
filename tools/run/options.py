"""Run settings as dataclasses, and the command-line options derived from them: each default and help
text is written once, on the field (`option(...)`), and `add_options` turns fields into flags."""
import argparse
import dataclasses
import math
import typing
from typing import Any, Callable, Dict, Optional, Sequence

from .errors import UserError


def solver_override(field: str, whose: str = "the solver's") -> Any:
    """The option that overrides a solver file's `field` (base_lr, weight_decay, momentum), with its range:
    written once for `jigsaw train` and `transfer` (`tools.caffe.solver.override` applies it)."""
    from .cli_runner import positive, ranged
    kind, note = {"base_lr": (positive(float, hi=1e3), ""),
                  "weight_decay": (positive(float, zero=True, hi=1e3), ""),
                  "momentum": (ranged(float, 0, 1, hi_open=True), " (Adam: its beta1)")}[field]
    return option(None, f"override {whose} {field}{note}", type=kind)


def option(default: Any = dataclasses.MISSING, help: str = "", *, type: Optional[Callable] = None,
           choices: Optional[Sequence] = None, nargs: Any = None, metavar: Optional[str] = None,
           flag: Any = None, const: Any = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that is also a command-line option `--name-with-dashes` (or `flag`: one name, a tuple
    of names such as ("-o", "--output"), or the field's own name without dashes for an argument). Its type
    is `type`, else that of the default (str when the default is None); a bool default False is a
    switch, True a `--no-...` switch."""
    meta = dict(help=help, type=type, choices=choices, nargs=nargs, metavar=metavar, flag=flag, const=const)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting(default: Any, *, type: Callable) -> Any:
    """A dataclass field that is not a command-line option (recipes and config files set it) but whose
    values are checked like one's: `type` is a `ranged(...)` / `positive(...)` rule."""
    return dataclasses.field(default=default, metadata=dict(type=type))


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _shown(value):
    if isinstance(value, (tuple, list)):
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add_options(parser: argparse.ArgumentParser, cls, only: Optional[Sequence[str]] = None,
                unset: bool = False, not_required: Sequence[str] = ()) -> None:
    """One option per `option()` field of dataclass `cls` (fields without help stay off the command
    line), or per field named in `only`. Required fields become required options. With unset=True an
    option not given is None, so the caller can tell it from its default (a run's recorded settings,
    or a recipe's, fill it); fields in `not_required` are optional even without a default (the caller
    checks them)."""
    for f in dataclasses.fields(cls):
        m = f.metadata
        if "help" not in m or (only is not None and f.name not in only):
            continue
        default = _default(f)
        flags = [m["flag"]] if isinstance(m["flag"], str) else list(m["flag"] or ())
        names = flags or ["--" + f.name.replace("_", "-")]
        help_text = m["help"]
        if isinstance(default, bool):
            if default:
                names = flags or ["--no-" + f.name.replace("_", "-")]
            parser.add_argument(*names, dest=f.name, action="store_false" if default else "store_true",
                                help=help_text, default=None if unset else default)
            continue
        positional = not names[0].startswith("-")  # a flag without dashes: the field is an argument
        kw: Dict[str, Any] = dict(dest=None if positional else f.name, help=help_text, choices=m["choices"],
                                  metavar=m["metavar"], nargs=m["nargs"], const=m["const"])
        kind = m["type"] or (type(default) if default not in (None, dataclasses.MISSING) and
                             not isinstance(default, (tuple, list)) else str)
        kw["type"] = kind
        if default is dataclasses.MISSING:
            if not positional:
                kw["required"] = f.name not in not_required
        else:
            kw["default"] = None if unset else default
            if default not in (None, (), [], {}) and "(default" not in help_text:
                kw["help"] = f"{help_text} (default {_shown(default)})"
        if positional and names != [f.name]:
            raise ValueError(f"{cls.__name__}.{f.name}: a positional option is named as its field")
        parser.add_argument(*names, **{k: v for k, v in kw.items() if v is not None or k == "default"})


def _fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint in (Any, object):
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (tuple, list):
        return isinstance(value, (tuple, list))
    return isinstance(value, origin or hint)


def check_types(cls, settings: Dict[str, Any], source: str) -> Dict[str, Any]:
    """Settings read from a file (a config file, a run's record) must have their fields' types: a
    wrong one is one line naming the file and the field, not a traceback deep in the run."""
    hints = typing.get_type_hints(cls)
    for name, value in settings.items():
        if name in hints and not _fits(value, hints[name]):
            hint = hints[name]
            want = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise UserError(f"{source}: setting '{name}' is {value!r}; expected {want}")
    return settings


def check_settings(cfg: Any) -> None:
    """A config's settings, however they came (options, a file, a record, Python), against what its fields
    allow: `choices`, and the range of a `positive(...)` type. Called by each config's __post_init__, so run
    code does not check them again."""
    for f in dataclasses.fields(cfg):
        m, value = f.metadata, getattr(cfg, f.name)
        if not m or value is None or value is dataclasses.MISSING:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"setting '{f.name}' is {value!r}: expected a finite number")
        values = value if isinstance(value, (tuple, list)) and m.get("nargs") in ("+", "*") else [value]
        for v in values:
            if m.get("choices") is not None and not isinstance(v, bool) and v not in m["choices"]:
                raise UserError(f"setting '{f.name}' is {v!r}: expected one of {', '.join(map(str, m['choices']))}")
            check = getattr(m.get("type"), "range_check", None)
            if check is not None and isinstance(v, (int, float)) and not isinstance(v, bool):
                check(f.name, v)


def given(cls, args: argparse.Namespace) -> Dict[str, Any]:
    """The fields of `cls` that `args` holds with a value (not None); lists become tuples."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names and v is not None}
