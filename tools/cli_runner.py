"""What every command-line tool here shares: one-line warnings, and errors that exit 2 without a traceback."""
import argparse
import sys
import warnings

from .errors import CaffeError


def positive(kind, zero=False):
    """An argparse type: `kind` (int, float) above 0, or at least 0 with zero=True."""
    def parse(text):
        v = kind(text)
        if v < 0 or (v == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'0 or more' if zero else 'positive'}, got {text}")
        return v
    return parse


def run_cli(prog, func, args, user_errors=()):
    """Call func(args); a CaffeError (or one of `user_errors`) prints `prog: error: ...` and returns 2."""
    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr)

    shown, warnings.showwarning = warnings.showwarning, one_line
    try:
        return func(args) or 0
    except (CaffeError, *user_errors) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown
