"""What every command-line tool here shares: one-line warnings, and errors that exit 2 without a traceback."""
import argparse
import sys
import warnings
from typing import Any, Callable, Optional

from .errors import UserError

# a path the user named that is missing or not what it should be: their mistake, not a bug
PATH_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def positive(kind: Callable[[str], Any], zero: bool = False) -> Callable[[str], Any]:
    """An argparse type: `kind` (int, float) above 0, or at least 0 with zero=True."""
    def parse(text):
        v = kind(text)
        if v < 0 or (v == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if zero else 'positive'}, got {text}")
        return v

    def range_check(name, value):  # the same rule on a setting from a file or a record (options.check_settings)
        if value < 0 or (value == 0 and not zero):
            raise UserError(f"setting '{name}' is {value!r}: must be {'0 or more' if zero else 'positive'}")
    parse.range_check = range_check
    return parse


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
    finally:
        warnings.showwarning = shown
