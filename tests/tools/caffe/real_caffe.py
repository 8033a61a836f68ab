"""The real BVLC Caffe as a test oracle: a net run there (caffe_oracle.py, in Caffe's own interpreter) and
here (load_caffe_net on the weights Caffe's fillers drew), every blob, blob diff and parameter diff compared
relative to Caffe's largest value. Needs CAFFE_PY (Caffe's interpreter) and CAFFE_PYTHON (pycaffe's folder),
as ../shared/caffe/build.sh prints them; without them the tests that use it skip."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from tools import load_caffe_net

CAFFE_PY, CAFFE_PYTHON = os.environ.get("CAFFE_PY"), os.environ.get("CAFFE_PYTHON")
ORACLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "caffe_oracle.py")
TOLERANCE = 1e-4  # of the reference's largest magnitude
needs_caffe = pytest.mark.skipif(not (CAFFE_PY and CAFFE_PYTHON),
                                 reason="set CAFFE_PY and CAFFE_PYTHON (../shared/caffe/build.sh prints them)")


class CaffeRefused(Exception):
    """Caffe stopped on the net (a CHECK failure or an exception); the message is its last lines."""


def run_caffe(work, text, inputs, phase="TEST", backward=None, diffs=None, seed=0, weights=None):
    """Caffe's blobs, diffs and parameters for the net `text` (saved as WORK/net.prototxt), its fillers'
    weights saved to WORK/caffe.caffemodel unless `weights` are given."""
    proto, saved, given, out = (os.path.join(work, n) for n in ("net.prototxt", "caffe.caffemodel", "in.npz",
                                                               "out.npz"))
    with open(proto, "w") as f:
        f.write(text)
    arrays = {f"data/{k}": v for k, v in inputs.items()}
    arrays.update({f"diff/{k}": v for k, v in (diffs or {}).items()})
    np.savez(given, **arrays)
    cmd = [CAFFE_PY, ORACLE, proto, out, "--phase", phase, "--seed", str(seed), "--inputs", given]
    cmd += ["--weights", weights] if weights else ["--save", saved]
    cmd += ["--backward", backward] if backward else []
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=CAFFE_PYTHON, GLOG_minloglevel="2"))
    if r.returncode != 0:
        raise CaffeRefused("\n".join((r.stderr or r.stdout).strip().splitlines()[-4:]))
    with np.load(out) as z:
        return proto, weights or saved, {k: z[k] for k in z.files}


def run_ours(proto, weights, inputs, phase="TEST", backward=None, diffs=None):
    """The same as run_caffe computes, here: {data/<blob>, diff/<blob>, param_diff/<layer>/<i>}."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(proto, weights, phase=phase,
                             input_shapes={k: tuple(v.shape) for k, v in inputs.items()})
    blobs, first, made = _replay(net, inputs, backward)
    out = {f"data/{k}": v.detach().numpy() for k, v in blobs.items()}
    if backward:
        if backward == "diffs":
            total = sum((blobs[k] * torch.from_numpy(d)).sum() for k, d in diffs.items())
        else:
            total = sum(w * made[i][j].sum() for i, terms in net.loss_at.items() for j, w in terms)
        if torch.is_tensor(total):  # a net without outputs (Silence) has nothing to propagate
            total.backward()
        for k, t in first.items():
            g = t.grad if t.requires_grad else None
            if g is None and diffs and k in diffs:  # an output no layer differentiates keeps the diff given
                g = torch.from_numpy(diffs[k])
            out[f"diff/{k}"] = np.zeros(tuple(t.shape), np.float32) if g is None else g.numpy()
        seen = {}
        for key, _, _ in net.plan:
            layer = getattr(net, key)
            k = seen[layer.layer_name] = seen.get(layer.layer_name, -1) + 1
            name = layer.layer_name if k == 0 else f"{layer.layer_name}#{k}"
            for i, b in enumerate(layer.blob_names):
                p = getattr(layer, b)
                if isinstance(p, torch.nn.Parameter):
                    out[f"param_diff/{name}/{i}"] = np.zeros(tuple(p.shape), np.float32) if p.grad is None \
                        else p.grad.numpy()
    return out, net


def _replay(net, inputs, backward):
    """Run the net's layers as CaffeNet.steps does, keeping each blob's first version too: in Caffe an
    in-place layer writes over its bottom, and the blob's diff ends as that of its first version."""
    blobs, first, made = {}, {}, []
    for k, v in inputs.items():
        t = torch.from_numpy(np.ascontiguousarray(v))
        blobs[k] = first[k] = t.requires_grad_() if backward and t.is_floating_point() else t
    for key, bottoms, tops in net.plan:
        layer = getattr(net, key)
        frozen = net.frozen_bottoms.get(key, ())
        xs = tuple(blobs[b].detach() if i in frozen else blobs[b] for i, b in enumerate(bottoms))
        # each top a tensor of its own (a layer may hand one tensor to two tops, as Split does), so that
        # its gradient is that of this blob alone
        outs = [o.view_as(o) if o.requires_grad else o for o in layer(*xs)]
        made.append(outs)
        for t, o in zip(tops, outs):
            if t not in first:
                if o.requires_grad:
                    o.retain_grad()
                first[t] = o
            blobs[t] = o
    return blobs, first, made


def compare(ref, ours, skip=()):
    """{key: error relative to the reference's largest magnitude} for every key both hold; Caffe's own
    Split blobs (`*_split_*`) and the keys in `skip` aside. Keys only Caffe holds are listed as missing."""
    errors, missing = {}, []
    for key, want in ref.items():
        if key in ("outputs",) or key.startswith("param/") or "_split_" in key or key in skip:
            continue
        if key not in ours:
            missing.append(key)
            continue
        got = np.asarray(ours[key], dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            if got.size == want.size:
                got = got.reshape(want.shape)
            else:
                errors[key] = float("inf")
                continue
        scale = np.abs(want).max() if want.size else 0.0
        errors[key] = float(np.abs(got - want).max() / (scale if scale > 0 else 1.0)) if want.size else 0.0
    return errors, missing


def inputs_for(spec, seed=0):
    """Random inputs from {name: ("normal", shape) | ("uniform", shape, lo, hi) | ("int", shape, high) |
    ("binary", shape)}; normal draws have no ties (what MAX pooling and ArgMax would split arbitrarily)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (kind, shape, *rest) in spec.items():
        if kind == "normal":
            out[name] = rng.standard_normal(shape).astype(np.float32)
        elif kind == "uniform":
            out[name] = rng.uniform(rest[0], rest[1], shape).astype(np.float32)
        elif kind == "int":
            out[name] = rng.integers(0, rest[0], shape).astype(np.float32)
        elif kind == "binary":
            out[name] = rng.integers(0, 2, shape).astype(np.float32)
        else:
            raise ValueError(kind)
    return out


if __name__ == "__main__":
    sys.exit("a helper of test_real_caffe.py")
