"""`caffe-convert --verify`: the same net and weights run by OpenCV's Caffe reader (an independent
implementation) and by ours, layer by layer, on the same seeded input."""
import os
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..run.errors import CaffeError
from ..run.runtime import generator

TOLERANCE = 1e-4  # relative to the largest |value| of the layer's output (at least 1)


def layer_outputs(net: Any, inputs: Dict[str, torch.Tensor]) -> List[Tuple[str, torch.Tensor]]:
    """(layer name, first top) for every layer, in order, as the layer itself produced it (before a
    later in-place layer overwrites the blob)."""
    with torch.no_grad():
        return [(layer.layer_name, outs[0]) for layer, _, outs in net.steps(dict(inputs)) if outs]


def verify(prototxt: str, weights: Optional[str] = None, seed: int = 0, tolerance: float = TOLERANCE,
           input_shapes: Optional[Dict[str, Sequence[int]]] = None) -> List[Dict[str, Any]]:
    """(rows, problem): a row (layer, type, shape, max |difference|, allowed) per layer compared, and None
    or one line naming the first layer over tolerance. A layer OpenCV does not run, a field our reader
    skipped, or a net OpenCV cannot build raise CaffeError: nothing can be compared there."""
    try:
        import cv2
    except ImportError:
        raise CaffeError("--verify needs OpenCV's Caffe reader: pip install 'opencv-python-headless<5'") from None
    from .. import load_caffe_net
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = load_caffe_net(prototxt, weights, seed=seed, input_shapes=input_shapes).without_side_effects()
    skipped = [str(w.message) for w in caught if "unknown field" in str(w.message)]
    if skipped:
        raise CaffeError(f"--verify: our reader skipped part of {prototxt}: {skipped[0]}")
    g = generator(seed)
    inputs = {k: torch.randn(tuple(s), generator=g) for k, s in net.input_shapes.items()}
    ours = layer_outputs(net, inputs)
    theirs = _opencv_outputs(cv2, net, inputs, [name for name, _ in ours])
    rows = []
    for (name, mine), other in zip(ours, theirs):
        layer = net.layer(name)
        mine = mine.detach().float().numpy()
        other = np.asarray(other, dtype=np.float32)
        if other.size != mine.size:
            raise CaffeError(f"--verify: layer '{name}' ({layer.layer_type}): OpenCV gives shape {other.shape}, "
                             f"we give {mine.shape}")
        diff = float(np.abs(mine.ravel() - other.ravel()).max()) if mine.size else 0.0
        allowed = tolerance * max(1.0, float(np.abs(mine).max()) if mine.size else 1.0)
        rows.append((name, layer.layer_type, tuple(mine.shape), diff, allowed))
        if not diff <= allowed:
            return rows, (f"--verify: layer '{name}' ({layer.layer_type}) differs from OpenCV by {diff:.3g} "
                          f"(allowed {allowed:.3g})")
    return rows, None


def _opencv_outputs(cv2, net, inputs, names):
    """OpenCV's outputs of the layers `names` on `inputs`, reading `net` as written back by save_caffe_net (so
    fillers and weights agree exactly); a net or layer it cannot build or run is one CaffeError line."""
    from .. import save_caffe_net
    with tempfile.TemporaryDirectory() as tmp:
        proto, model = os.path.join(tmp, "net.prototxt"), os.path.join(tmp, "net.caffemodel")
        save_caffe_net(net, proto, model)
        try:
            cvnet = cv2.dnn.readNetFromCaffe(proto, model)
        except cv2.error as e:
            raise CaffeError(f"--verify: OpenCV cannot build this net ({str(e).strip().splitlines()[-1][:200]})") from None
    cvnet.enableFusion(False)
    known = set(cvnet.getLayerNames())
    missing = [name for name in names if name not in known]
    if missing:
        raise CaffeError(f"--verify: OpenCV has no layer '{missing[0]}' (it merged or skipped it); "
                         "nothing to compare it with")
    for name, x in inputs.items():
        cvnet.setInput(np.ascontiguousarray(x.numpy()), name)
    try:  # OpenCV builds its layers when it first runs them: an unknown type surfaces only here
        return cvnet.forward(names)
    except cv2.error as e:
        raise CaffeError(f"--verify: OpenCV cannot run this net ({str(e).strip().splitlines()[-1][:200]})") from None


def format_rows(rows: List[Dict[str, Any]]) -> str:
    lines = [f"{'layer':24s} {'type':16s} {'shape':20s} {'max |diff|':>11s} {'allowed':>9s}"]
    for name, kind, shape, diff, allowed in rows:
        lines.append(f"{name[:24]:24s} {kind[:16]:16s} {str(shape)[:20]:20s} {diff:11.3g} {allowed:9.3g}")
    return "\n".join(lines)
