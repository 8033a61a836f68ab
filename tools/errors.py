"""The one error type for a user's bad file or argument: its message is one line saying where and what."""


class CaffeError(ValueError):
    """A malformed or unsupported Caffe file, layer or field. The CLI prints it and exits 2."""


def where(path, line=None, col=None):
    loc = str(path) if path else "<text>"
    if line is not None:
        loc += f":{line}"
        if col is not None:
            loc += f":{col}"
    return loc
