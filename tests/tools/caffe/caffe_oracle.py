"""Runs a net in the real BVLC Caffe and saves what Caffe computed: the reference of test_real_caffe.py.

Runs in Caffe's own interpreter (CAFFE_PY, with CAFFE_PYTHON on its path), never in the project's: it
imports only numpy and caffe. Usage:
  caffe_oracle.py NET.prototxt OUT.npz --phase TRAIN|TEST --seed N [--save W.caffemodel] [--inputs IN.npz]
                  [--backward diffs|loss]
IN.npz holds `data/<input>` arrays for the net's inputs and, for --backward diffs, `diff/<output>` arrays for
its outputs. OUT.npz gets `data/<blob>` for every blob after the forward pass, and after the backward pass
`diff/<blob>` for every blob and `param_diff/<layer>/<i>` for every parameter. --save writes the weights
Caffe's fillers drew (net.save), before anything runs. A Caffe CHECK failure aborts the process: the caller
reads that as Caffe refusing the net.
"""
import argparse
import os
import sys

os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

import caffe  # noqa: E402


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("prototxt")
    ap.add_argument("out")
    ap.add_argument("--phase", default="TEST", choices=("TRAIN", "TEST"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save")
    ap.add_argument("--weights")
    ap.add_argument("--inputs")
    ap.add_argument("--backward", choices=("diffs", "loss"))
    args = ap.parse_args(argv)
    caffe.set_mode_cpu()
    caffe.set_random_seed(args.seed)
    phase = caffe.TRAIN if args.phase == "TRAIN" else caffe.TEST
    net = caffe.Net(args.prototxt, phase, **({"weights": args.weights} if args.weights else {}))
    if args.save:
        net.save(args.save)
    given = dict(np.load(args.inputs)) if args.inputs else {}
    for name in net.inputs:
        if f"data/{name}" in given:
            net.blobs[name].reshape(*given[f"data/{name}"].shape)
            net.blobs[name].data[...] = given[f"data/{name}"]
    net.reshape()
    net.forward()
    out = {f"data/{name}": blob.data.copy() for name, blob in net.blobs.items()}
    if args.backward:
        if args.backward == "diffs":  # set by hand: pycaffe's keyword form cannot take a 0-axis top
            for name in net.outputs:
                net.blobs[name].diff[...] = given[f"diff/{name}"]
        net.backward()
        out.update({f"diff/{name}": blob.diff.copy() for name, blob in net.blobs.items()})
        for layer, params in net.params.items():
            out.update({f"param_diff/{layer}/{i}": p.diff.copy() for i, p in enumerate(params)})
    out.update({f"param/{layer}/{i}": p.data.copy() for layer, params in net.params.items()
                for i, p in enumerate(params)})
    out["outputs"] = np.array(list(net.outputs))
    np.savez(args.out, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
