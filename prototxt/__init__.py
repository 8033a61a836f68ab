"""Our Caffe net and solver files: the CFN's (generated from jigsaw/architecture.py by
`python -m prototxt`) and the solvers, written by hand."""
import os

from tools.run.errors import UserError, did_you_mean

FOLDER = os.path.dirname(os.path.abspath(__file__))
SUFFIX = ".prototxt"


def path(name: str) -> str:
    """The installed path of one of these files, e.g. path("cfn_solver.prototxt")."""
    return os.path.join(FOLDER, name)


def solvers() -> list:
    """The shipped solvers' names: cfn_solver, cfn_solver_short."""
    return sorted(n[:-len(SUFFIX)] for n in os.listdir(FOLDER) if n.endswith(SUFFIX) and "solver" in n)


def find_solver(given: str, flag: str = "--solver") -> str:
    """A solver file as given when it exists (or prototxt text); else a shipped one by its name, found wherever the
    command runs: 'cfn_solver_short', 'cfn_solver_short.prototxt' or 'prototxt/cfn_solver_short.prototxt'."""
    if not isinstance(given, str) or os.path.exists(given):
        return given
    if any(c in given for c in "{:\n") and not given.endswith(SUFFIX):  # prototxt text, as read_solver takes it
        return given
    folder, name = os.path.split(given)
    stem = name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name
    shipped = solvers()
    if stem in shipped and folder in ("", "prototxt"):
        return path(stem + SUFFIX)
    raise UserError(f"{flag} {given}: no such file, and not a shipped solver{did_you_mean(stem, shipped)} (shipped: "
                    f"{', '.join(shipped)}; give one by its name)")
