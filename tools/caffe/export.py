"""A converted net that runs without this package: `torch.export` (.pt2) and ONNX (.onnx) files of a
CaffeNet, and the way back from caffe-convert's own .pt to a module (`load_pt`)."""
import contextlib
import io
import os
import re
import warnings
from typing import Any, Dict

import torch

from ..run.atomic import ensure_dir
from ..run.checkpoint import load_checkpoint
from ..run.errors import CaffeError
from ..run.runtime import generator

PT_FORMAT = "caffe-convert/1"
ONNX_OPSET = 18


class _Positional(torch.nn.Module):
    """The net with positional inputs (in the net's input order) and a tuple of its outputs."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs, self.outputs = net, list(net.input_shapes), list(net.output_names)

    def forward(self, *xs):
        out = self.net(**dict(zip(self.inputs, xs)), outputs=self.outputs)
        return tuple(out[name] for name in self.outputs)


def example_inputs(net: Any, seed: int = 0) -> Dict[str, torch.Tensor]:
    g = generator(seed)
    return {k: torch.randn(tuple(s), generator=g) for k, s in net.input_shapes.items()}


def export(net: Any, path: str) -> str:
    """Write `net` (eval mode, its declared input shapes) as `path`: .pt2 (torch.export.save; load with
    torch.export.load(path).module()) or .onnx (opset 18; input and output names are the net's blobs).
    A layer that cannot be traced is one line naming it."""
    if not path.endswith((".pt2", ".onnx")):
        raise CaffeError(f"--export {path}: expected a .pt2 (torch.export) or .onnx file")
    if not net.input_shapes:
        raise CaffeError("--export: the net has no inputs to trace it with")
    if not net.output_names:
        raise CaffeError("--export: the net has no output blobs (its last layers write files, like HDF5Output): "
                         "a standalone net would return nothing")
    net.eval().without_side_effects()  # tracing runs the net: its output layers must not write
    wrapped = _Positional(net)
    args = tuple(example_inputs(net).values())
    ensure_dir(os.path.dirname(os.path.abspath(path)))
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        _write(wrapped, args, tmp, path.endswith(".onnx"))
        os.replace(tmp, path)
    except CaffeError:
        raise
    except OSError as e:
        raise CaffeError(f"--export {path}: cannot write ({e.strerror or e})") from None
    except Exception as e:  # tracing and converter failures: say which layer when we can
        layer = _culprit(net, args, path.endswith(".onnx"), tmp)
        first = re.sub(r"\x1b\[[0-9;]*m", "", (str(e).strip().splitlines() or [type(e).__name__])[0])
        first = re.sub(r"\s*This is step .*$", "", first)[:200]
        raise CaffeError(f"--export {path}: cannot export {layer or 'the net'} ({first})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _write(module, args, path, onnx):
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.export.export(module, args)
        if not onnx:
            torch.export.save(program, path)
            return
        names = dict(input_names=module.inputs, output_names=module.outputs) if hasattr(module, "inputs") else {}
        torch.onnx.export(program, args, dynamo=True, opset_version=ONNX_OPSET, external_data=False,
                          verbose=False, **names).save(path)


def _culprit(net, args, onnx, scratch):
    """The first layer that cannot be exported on its own, as 'layer NAME (TYPE)', or None."""
    with torch.no_grad():
        for layer, xs, _ in net.steps(dict(zip(net.input_shapes, args))):
            try:
                _write(_OneLayer(layer), xs, scratch, onnx)
            except Exception:
                return f"layer '{layer.layer_name}' ({layer.layer_type})"
    return None


class _OneLayer(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, *xs):
        return tuple(self.layer(*xs))


def load_pt(path: str) -> torch.nn.Module:
    """The CaffeNet a caffe-convert .pt holds (its net text, input shapes and weights), in eval mode:
    caffe-convert's way back from its own file without the .prototxt."""
    from .net import CaffeNet
    from .prototxt import read_net
    payload = load_checkpoint(path, "a .pt written by caffe-convert")
    if not isinstance(payload, dict) or payload.get("format") != PT_FORMAT:
        raise CaffeError(f"{path}: not a .pt written by caffe-convert (no '{PT_FORMAT}' marker)")
    net = CaffeNet(read_net(payload["net"], path=path), input_shapes=payload.get("input_shapes") or None,
                   path=path)
    try:
        net.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise CaffeError(f"{path}: its weights do not fit its net ({str(e).splitlines()[0][:200]})") from None
    return net.eval()
