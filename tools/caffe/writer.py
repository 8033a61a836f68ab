"""Write a CaffeNet, or any state_dict plus a NetParameter, back to .prototxt + .caffemodel."""
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..run.atomic import atomic_files
from .caffemodel import repeat_key, write_caffemodel
from ..run.errors import CaffeError
from .prototxt import write_prototxt


def caffe_blobs(module: Any) -> Dict[Any, List[np.ndarray]]:
    """{layer name: [float32 arrays in Caffe's blob order]} for every layer of a CaffeNet that has blobs."""
    out, seen = {}, {}
    for key, _, _ in module.plan:
        layer = getattr(module, key)
        name = repeat_key(layer.layer_name, seen)
        if layer.blob_names:
            out[name] = [getattr(layer, b).detach().to("cpu", torch.float32).numpy() for b in layer.blob_names]
    return out


def pair_stem(output: str) -> str:
    """'net', 'net.prototxt' or 'net.caffemodel' -> 'net': the stem of a NAME.prototxt + NAME.caffemodel pair."""
    return os.path.splitext(output)[0] if output.endswith((".prototxt", ".caffemodel")) else output


def blobs_from_state_dict(state_dict: Dict[str, Any], net_param: Any,
                          input_shapes: Optional[Dict[str, Sequence[int]]] = None) -> Dict[Any, List[np.ndarray]]:
    """Map a state_dict onto the blobs of `net_param` (keys '<layer>.<blob>', optionally prefixed)."""
    from .net import CaffeNet

    skeleton = CaffeNet(net_param, input_shapes=input_shapes, device="meta")
    prefixes = {k[: k.index(s)] for k in state_dict for s in _suffixes(skeleton) if k.endswith(s)}
    prefix = min(prefixes, key=len) if prefixes else ""
    out, seen = {}, {}
    for key, _, _ in skeleton.plan:
        layer = getattr(skeleton, key)
        blob_key = repeat_key(layer.layer_name, seen)
        arrays = []
        for b in layer.blob_names:
            name = f"{prefix}{key}.{b}"
            if name not in state_dict:
                raise CaffeError(f"state_dict has no '{name}' for layer '{layer.layer_name}'")
            t = torch.as_tensor(state_dict[name])
            want = tuple(getattr(layer, b).shape)
            if tuple(t.shape) != want:
                raise CaffeError(f"state_dict '{name}' has shape {tuple(t.shape)}, layer "
                                 f"'{layer.layer_name}' needs {want}")
            arrays.append(t.detach().to("cpu", torch.float32).numpy())
        if arrays:
            out[blob_key] = arrays
    return out


def _suffixes(skeleton):
    return [f"{key}.{b}" for key, _, _ in skeleton.plan for b in getattr(skeleton, key).blob_names]


def save_caffe_net(module: Any, prototxt_path: Optional[str], weights_path: Optional[str], net_param: Any = None,
                   input_shapes: Optional[Dict[str, Sequence[int]]] = None) -> None:
    """Write `module` (a CaffeNet, or a state_dict with `net_param`) as .prototxt + .caffemodel.

    Both files are written through a temporary file and a rename, so an interrupted or failed
    save never leaves a half-written file behind.
    """
    from .net import CaffeNet

    if isinstance(module, CaffeNet):
        net = net_param or module.net_param
        blobs = caffe_blobs(module)
    elif isinstance(module, dict):
        if net_param is None:
            raise CaffeError("saving a state_dict needs the NetParameter (net_param=...) it belongs to")
        net = net_param
        blobs = blobs_from_state_dict(module, net, input_shapes)
    else:
        raise CaffeError(f"cannot save a {type(module).__name__}: pass a CaffeNet, or a state_dict "
                         "and net_param")
    for name, arrays in blobs.items():
        for a in arrays:
            if not np.isfinite(a).all():
                raise CaffeError(f"layer '{name}' holds NaN or infinite weights; refusing to save")
    if prototxt_path and weights_path:  # the pair changes together or not at all
        with atomic_files(weights_path, prototxt_path) as (weights_tmp, prototxt_tmp):
            write_caffemodel(weights_tmp, net, blobs)
            write_prototxt(prototxt_tmp, net)
    elif prototxt_path:
        write_prototxt(prototxt_path, net)
    elif weights_path:
        write_caffemodel(weights_path, net, blobs)
