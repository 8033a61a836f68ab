"""Time and peak memory to read and build an AlexNet-size net (~61M params) from a .caffemodel.

Each measurement runs in a fresh process; "extra memory" is peak RSS minus the RSS after imports.
Baseline: protobuf's own NetParameter.ParseFromString plus np.array(blob.data) per blob, the
approach most converters take, measured in the same run.

    python benchmarks/convert.py [--keep DIR]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ALEXNET = '''name: "AlexNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 227 dim: 227 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2" convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm2" type: "LRN" bottom: "pool2" top: "norm2" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv3" type: "Convolution" bottom: "norm2" top: "conv3" convolution_param { num_output: 384 pad: 1 kernel_size: 3 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4" convolution_param { num_output: 384 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5" convolution_param { num_output: 256 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 4096 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 4096 } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" inner_product_param { num_output: 1000 } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
'''

CHILD = r'''
import json, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np, torch
import tools
from tools.caffe import caffe_pb2
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
base = rss()
t = time.perf_counter()
if {mode!r} == "ours":
    net = tools.load_caffe_net({proto!r}, {model!r})
    n = sum(p.numel() for p in net.parameters())
else:
    msg = caffe_pb2.NetParameter()
    with open({model!r}, "rb") as f:
        msg.ParseFromString(f.read())
    arrays = [np.array(b.data, np.float32).reshape(tuple(b.shape.dim)) for l in msg.layer for b in l.blobs]
    n = sum(a.size for a in arrays)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps(dict(seconds=dt, extra=peak - base, params=int(n))))
'''


def measure(mode, proto, model):
    code = CHILD.format(root=ROOT, mode=mode, proto=proto, model=model)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="folder to keep the generated files in")
    args = ap.parse_args()
    import warnings
    from tools import load_caffe_net, save_caffe_net

    folder = args.keep or tempfile.mkdtemp()
    os.makedirs(folder, exist_ok=True)
    proto, model = os.path.join(folder, "alexnet.prototxt"), os.path.join(folder, "alexnet.caffemodel")
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(ALEXNET, seed=0)
    save_caffe_net(net, proto, model)
    write_s = time.perf_counter() - t
    size = os.path.getsize(model)
    del net
    rows = [("ours: load_caffe_net (read + build)", measure("ours", proto, model)),
            ("baseline: protobuf parse + np.array", measure("baseline", proto, model))]
    print(f"AlexNet caffemodel: {size / 2**20:.1f} MiB, written (with filler init) in {write_s:.2f} s")
    print(f"{'method':40s} {'params':>12s} {'seconds':>8s} {'extra MiB':>10s} {'x file':>7s}")
    for name, r in rows:
        print(f"{name:40s} {r['params']:>12,d} {r['seconds']:>8.2f} {r['extra'] / 2**20:>10.1f} "
              f"{r['extra'] / size:>7.2f}")
    ours, base = rows[0][1], rows[1][1]
    print(f"speed-up vs baseline: {base['seconds'] / ours['seconds']:.1f}x; "
          f"memory vs baseline: {ours['extra'] / base['extra']:.2f}x; target extra <= 2.00x file")


if __name__ == "__main__":
    main()
