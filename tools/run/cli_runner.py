"""What every command-line tool here shares: one-line warnings, and errors that exit 2 without a traceback."""
import argparse
import math
import sys
import warnings
from typing import Any, Callable, Optional

from .errors import UserError, closest, did_you_mean

# a path the user named that is missing or not what it should be: their mistake, not a bug
PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def ranged(kind: Callable[[str], Any], lo: Optional[float] = None, hi: Optional[float] = None,
           lo_open: bool = False, hi_open: bool = False) -> Callable[[str], Any]:
    """An argparse type: `kind` (int, float) within [lo, hi] (an open end with lo_open / hi_open), finite.
    Its `range_check` applies the same rule to a setting from a file or a record (options.check_settings):
    a number's range is declared once, on its config field."""
    low = "" if lo is None else ("positive" if lo_open else "0 or more") if lo == 0 else \
        f"{'above' if lo_open else 'at least'} {lo:g}"
    high = "" if hi is None else f"{'below' if hi_open else 'at most'} {hi:g}"
    rule = " and ".join(x for x in (low, high) if x) or "a finite number"

    def fits(v):
        if isinstance(v, float) and not math.isfinite(v):
            return False
        return not ((lo is not None and (v < lo or (lo_open and v == lo))) or
                    (hi is not None and (v > hi or (hi_open and v == hi))))

    def parse(text):
        try:
            v = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got {text}") from None
        if not fits(v):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return v

    def range_check(name, value):
        if not fits(value):
            raise UserError(f"setting '{name}' is {value!r}: must be {rule}")
    parse.range_check = range_check
    parse.rule = rule
    return parse


def positive(kind: Callable[[str], Any], zero: bool = False, hi: Optional[float] = None) -> Callable[[str], Any]:
    """An argparse type: `kind` (int, float) above 0 (at least 0 with zero=True), at most `hi`, finite."""
    return ranged(kind, 0, hi, lo_open=not zero)


# the ranges settings share; each config field names its own, beside its default
SEED = positive(int, zero=True, hi=2 ** 63 - 1)
FRACTION = ranged(float, 0, 1, hi_open=True)
COUNT = positive(int, zero=True, hi=10 ** 9)
COUNT_1 = positive(int, hi=10 ** 9)
MAX_BATCH = 1 << 16   # items per pass: beyond it the host memory one batch takes is the problem
MAX_SIDE = 8192       # pixels on an image side the commands resize to
MAX_WORKERS = 256


class Parser(argparse.ArgumentParser):
    """The commands' parser: an option is its full name only (no prefixes: `--epoch` is not `--epochs`, and a
    new option never changes what an old command line meant); a misspelled choice gets a "did you mean"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            known = ", ".join(map(repr, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}"
                                         f"{did_you_mean(value, action.choices)} (choose from {known})")

    def error(self, message: str) -> None:
        if message.startswith("unrecognized arguments: "):  # say which option was meant
            flags = {f[2:]: f for f in _flags(self) if f not in ("--help", "--version")}
            hints = [f"{w}: did you mean {flags[close]!r}?" for w in message.split()[2:] if w.startswith("--")
                     for close in [closest(w.split("=")[0][2:], flags)] if close]
            message += f" ({'; '.join(hints)})" if hints else ""
        super().error(message)


def _flags(parser: argparse.ArgumentParser) -> list:
    """Every option string of a parser and of its subcommands' parsers."""
    found = []
    for action in parser._actions:
        found += [s for s in action.option_strings if s.startswith("--")]
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _flags(sub)
    return sorted(set(found))


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--version` on a command line and on each of its subcommands."""
    from importlib import metadata
    try:
        version = metadata.version("jigsaw-cfn")
    except metadata.PackageNotFoundError:
        version = "(not installed: pip install -e .)"
    parsers = [parser] + [p for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                          for p in a.choices.values()]
    for p in parsers:
        p.add_argument("--version", action="version", version=f"{parser.prog} {version}")
    return parser


def run_cli(prog: str, func: Callable[[Any], Optional[int]], args: Any) -> int:
    """Call func(args); a UserError or a bad path prints `prog: error: ...` and returns 2. Anything
    else propagates with its traceback: it is a bug."""
    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr)

    shown, warnings.showwarning = warnings.showwarning, one_line
    try:
        return func(args) or 0
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except PATH_ERRORS as e:
        what = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
        print(f"{prog}: error: {what}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `| head` closed stdout: not an error; Python would print one at exit
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        warnings.showwarning = shown
