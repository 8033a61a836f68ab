"""User errors: a bad file or argument. The command lines print the one-line message and exit 2;
anything else is a bug and keeps its traceback."""


class UserError(ValueError):
    """A user's file, folder or setting is wrong; the message says where and what was expected."""


class CaffeError(UserError):
    """A malformed or unsupported Caffe file, layer or field."""


def where(path, line=None, col=None):
    loc = str(path) if path else "<text>"
    if line is not None:
        loc += f":{line}"
        if col is not None:
            loc += f":{col}"
    return loc
