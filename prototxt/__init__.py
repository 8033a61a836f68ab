"""Our Caffe net and solver files: the CFN's (generated from jigsaw/architecture.py by
`python -m prototxt`) and the solvers, written by hand."""
import os

FOLDER = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
    """The installed path of one of these files, e.g. path("cfn_solver.prototxt")."""
    return os.path.join(FOLDER, name)
