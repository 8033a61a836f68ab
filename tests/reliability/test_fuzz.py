"""Mutated .caffemodel and .prototxt files: every failure is our one-line CaffeError, never another
exception, and nothing allocates more than the bytes present justify."""
import resource
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tools.caffe import caffe_pb2 as pb
from tools.caffe.caffemodel import parse_caffemodel, write_caffemodel
from tools.run.errors import CaffeError
from tools.caffe.net import CaffeNet
from tools.caffe.textformat import parse_text
from tools.caffe.upgrade import upgrade_net

NET_TEXT = '''name: "fuzz"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { name: "w" lr_mult: 1 } convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 5 } }
layers { name: "old" type: RELU bottom: "fc" top: "fc" }
'''


def _valid_model():
    net = parse_text(NET_TEXT.replace('layers { name: "old" type: RELU bottom: "fc" top: "fc" }\n', ""),
                     pb.NetParameter())
    rng = np.random.default_rng(0)
    blobs = {"conv1": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), np.zeros(4, np.float32)],
             "fc": [rng.standard_normal((5, 36)).astype(np.float32), np.zeros(5, np.float32)]}
    import tempfile, os
    path = os.path.join(tempfile.mkdtemp(), "m.caffemodel")
    write_caffemodel(path, net, blobs)
    with open(path, "rb") as f:
        return f.read()


MODEL = _valid_model()


def _bounded(fn):
    """Run fn with the address space capped, so an unbounded allocation fails the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        resource.setrlimit(resource.RLIMIT_AS, (max(usage * 4, 6 << 30), hard))
        return fn()
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, len(MODEL))),
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, len(MODEL) - 1), st.integers(0, 7)),
                                         min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.integers(0, len(MODEL)), st.binary(min_size=1, max_size=12)),
    st.tuples(st.just("huge_varint"), st.integers(0, len(MODEL) - 1)),
)


def _mutate(data, m):
    b = bytearray(data)
    if m[0] == "truncate":
        return bytes(b[:m[1]])
    if m[0] == "flip":
        for pos, bit in m[1]:
            b[pos] ^= 1 << bit
        return bytes(b)
    if m[0] == "insert":
        return bytes(b[:m[1]] + m[2] + b[m[1]:])
    return bytes(b[:m[1]] + b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f" + b[m[1]:])  # a declared ~2^63 length


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=mutation)
def test_mutated_caffemodels_fail_cleanly(m):
    data = _mutate(MODEL, m)

    def load():
        try:
            net, named = parse_caffemodel(data, "fuzz.caffemodel")
            for _, blobs in named:  # touching every payload must be safe too (flipped bits make NaNs)
                for blob in blobs:
                    with np.errstate(all="ignore"):
                        np.asarray(blob.data).sum()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                netp = upgrade_net(parse_text(NET_TEXT, pb.NetParameter()))
                CaffeNet(netp, weights=named, device="meta")
        except CaffeError as e:
            assert "\n" not in str(e)
    _bounded(load)


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, len(NET_TEXT)), junk=st.text(max_size=6), pos=st.integers(0, len(NET_TEXT)),
       number=st.sampled_from(["-1", "0", "99999999999", "4294967295", "1e40", "nan", "2147483648"]))
def test_mutated_prototxts_fail_cleanly(cut, junk, pos, number):
    variants = [NET_TEXT[:cut], NET_TEXT[:pos] + junk + NET_TEXT[pos:],
                NET_TEXT.replace("num_output: 4", f"num_output: {number}"),
                NET_TEXT.replace("dim: 12", f"dim: {number}", 1),
                NET_TEXT.replace("kernel_size: 3 stride: 2 }", f"kernel_size: {number} stride: 2 }}")]
    for text in variants:
        def build():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    net = upgrade_net(parse_text(text, pb.NetParameter(), "fuzz.prototxt"))
                    CaffeNet(net, device="meta")
            except CaffeError as e:
                assert "\n" not in str(e)
        _bounded(build)


def test_end_of_file_inside_an_unknown_list_is_one_line():
    """Found by the fuzzer above ('A[' at the start of the file): a traceback before."""
    for text in ("A[", 'layer { name: "a" frobnicate: [1, 2', "unknown: [ { a: 1 }"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(CaffeError, match="missing|end of file") as e:
                parse_text(text, pb.NetParameter(), "eof.prototxt")
        assert "\n" not in str(e.value)
