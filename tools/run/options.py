"""Run settings as dataclasses, and the command-line options derived from them: each default and help
text is written once, on the field (`option(...)`), and `add_options` turns fields into flags."""
import argparse
import dataclasses
import typing
from typing import Any, Callable, Dict, Optional, Sequence

from .errors import UserError


def option(default: Any = dataclasses.MISSING, help: str = "", *, type: Optional[Callable] = None,
           choices: Optional[Sequence] = None, nargs: Any = None, metavar: Optional[str] = None,
           flag: Optional[str] = None, const: Any = None, default_factory: Any = dataclasses.MISSING):
    """A dataclass field that is also a command-line option `--name-with-dashes` (or `flag`). Its type
    is `type`, else that of the default (str when the default is None); a bool default False is a
    switch, True a `--no-...` switch."""
    meta = dict(help=help, type=type, choices=choices, nargs=nargs, metavar=metavar, flag=flag, const=const)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


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
        name = m["flag"] or "--" + f.name.replace("_", "-")
        help_text = m["help"]
        if isinstance(default, bool):
            if default:
                name = m["flag"] or "--no-" + f.name.replace("_", "-")
            parser.add_argument(name, dest=f.name, action="store_false" if default else "store_true",
                                help=help_text, default=None if unset else default)
            continue
        kw: Dict[str, Any] = dict(dest=f.name, help=help_text, choices=m["choices"], metavar=m["metavar"],
                                  nargs=m["nargs"], const=m["const"])
        kind = m["type"] or (type(default) if default not in (None, dataclasses.MISSING) and
                             not isinstance(default, (tuple, list)) else str)
        kw["type"] = kind
        if default is dataclasses.MISSING:
            kw["required"] = f.name not in not_required
        else:
            kw["default"] = None if unset else default
            if default not in (None, (), [], {}) and "(default" not in help_text:
                kw["help"] = f"{help_text} (default {_shown(default)})"
        parser.add_argument(name, **{k: v for k, v in kw.items() if v is not None or k == "default"})


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


def given(cls, args: argparse.Namespace) -> Dict[str, Any]:
    """The fields of `cls` that `args` holds with a value (not None); lists become tuples."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names and v is not None}
