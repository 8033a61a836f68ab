"""Read and write .prototxt nets and solvers: parse, upgrade to the current format, filter by phase."""
import os
import warnings
from typing import Any, Optional, Sequence

from google.protobuf import text_format

from . import caffe_pb2 as pb
from ..run.atomic import atomic_open
from ..run.errors import CaffeError
from .textformat import parse_text, read_text
from .upgrade import filter_net, upgrade_net


def read_net(source: Any, phase: Optional[str] = None, level: int = 0, stages: Sequence[str] = (),
             path: Optional[str] = None) -> "pb.NetParameter":
    """A NetParameter from a .prototxt path, prototxt text or a message; upgraded, and filtered when phase is given."""
    if isinstance(source, pb.NetParameter):
        net, path = _copy(source), path or "<net>"
    elif _is_text(source):
        net, path = parse_text(source, pb.NetParameter(), path or "<text>"), path or "<text>"
    else:
        path = str(source)
        net = read_text(path, pb.NetParameter())
    net = upgrade_net(net, path)
    if phase is not None:
        net = filter_net(net, phase, level, stages, path)
    return net


def read_solver(source: Any) -> "pb.SolverParameter":
    """A SolverParameter from a solver.prototxt path or text; the legacy solver_type becomes `type`."""
    if isinstance(source, pb.SolverParameter):
        sp, path = _copy(source), "<solver>"
    elif _is_text(source):
        sp, path = parse_text(source, pb.SolverParameter(), "<text>"), "<text>"
    else:
        path = str(source)
        sp = read_text(path, pb.SolverParameter())
    if sp.HasField("solver_type") and sp.HasField("type"):
        raise CaffeError(f"{path}: both the legacy solver_type and type are given; Caffe refuses that (keep type)")
    if sp.HasField("solver_type"):
        sp.type = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta",
                   5: "Adam"}[sp.solver_type]
        warnings.warn(f"{path}: upgraded legacy solver_type to type: \"{sp.type}\"", stacklevel=2)
    return sp


def _is_text(source):
    """A string holding prototxt text rather than naming a file."""
    if not isinstance(source, str) or os.path.exists(source):
        return False
    return any(c in source for c in "{:\n") and not source.endswith((".prototxt", ".pt"))


def _copy(msg):
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def net_text(net: Any) -> str:
    """The .prototxt text of a NetParameter, without blob data."""
    clean = _copy(net)
    for layer in clean.layer:
        del layer.blobs[:]
    return text_format.MessageToString(clean)


def write_prototxt(path: str, msg: Any) -> None:
    """Write a NetParameter (without blobs) or SolverParameter as text, atomically."""
    text = net_text(msg) if isinstance(msg, pb.NetParameter) else text_format.MessageToString(msg)
    with atomic_open(path, "w") as f:
        f.write(text)
