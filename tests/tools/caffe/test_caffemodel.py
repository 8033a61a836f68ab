"""Binary .caffemodel reading and writing: lossless round trips, legacy encodings, corruption."""
import numpy as np
import pytest

from tools.caffe import caffe_pb2 as pb
from tools.caffe.caffemodel import parse_caffemodel, read_caffemodel, write_caffemodel
from tools.run.errors import CaffeError, UserError
from tools.caffe.textformat import parse_text

NET = parse_text('''name: "n"
layer { name: "c1" type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "r" type: "ReLU" }
layer { name: "fc" type: "InnerProduct" inner_product_param { num_output: 5 } }''', pb.NetParameter())


def _blobs(seed=0):
    g = np.random.default_rng(seed)
    return {"c1": [g.standard_normal((2, 3, 3, 3)).astype(np.float32), g.standard_normal(2).astype(np.float32)],
            "fc": [g.standard_normal((5, 18)).astype(np.float32), np.float32([np.inf, -0.0, 1e-45, 3e38, -1])]}


def test_round_trip_is_lossless_and_byte_stable(tmp_path):
    a, b = tmp_path / "a.caffemodel", tmp_path / "b.caffemodel"
    blobs = _blobs()
    write_caffemodel(str(a), NET, blobs)
    net, named = read_caffemodel(str(a))
    assert [n for n, _ in named] == ["c1", "r", "fc"]
    for name, arrays in named:
        for got, want in zip(arrays, blobs.get(name, [])):
            assert got.data.dtype == np.float32 and got.data.tobytes() == want.tobytes()
    write_caffemodel(str(b), net, {n: [x.data for x in arrays] for n, arrays in named})
    assert a.read_bytes() == b.read_bytes()


def test_protobufs_own_parser_agrees(tmp_path):
    path = tmp_path / "a.caffemodel"
    blobs = _blobs(1)
    write_caffemodel(str(path), NET, blobs)
    msg = pb.NetParameter.FromString(path.read_bytes())
    assert list(msg.layer[0].blobs[0].shape.dim) == [2, 3, 3, 3]
    np.testing.assert_array_equal(np.array(msg.layer[2].blobs[0].data, np.float32).reshape(5, 18),
                                  blobs["fc"][0])
    assert msg.layer[2].inner_product_param.num_output == 5


def test_legacy_unpacked_double_and_4d_blobs():
    net = pb.NetParameter()
    v1 = net.layers.add(name="fc", type=pb.V1LayerParameter.INNER_PRODUCT)
    w = v1.blobs.add(num=1, channels=1, height=2, width=3)
    w.data.extend([1, 2, 3, 4, 5, 6])
    b = v1.blobs.add()
    b.shape.dim.append(2)
    b.double_data.extend([0.25, -7.5])
    raw = bytearray(net.SerializeToString())
    # Re-encode the float data unpacked (tag 0x2D + 4 bytes per value), as very old files do.
    packed = bytes([0x2A, 24]) + np.float32([1, 2, 3, 4, 5, 6]).tobytes()
    unpacked = b"".join(bytes([0x2D]) + np.float32([v]).tobytes() for v in range(1, 7))
    assert packed in raw
    raw = bytes(raw).replace(packed, unpacked)
    raw = _fix_lengths(raw, len(unpacked) - len(packed))
    _, named = parse_caffemodel(raw)
    (name, (wb, bb)), = named
    assert name == "fc" and wb.legacy and wb.data.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(wb.data.reshape(-1), [1, 2, 3, 4, 5, 6])
    assert bb.data.dtype == np.float64 and list(bb.data) == [0.25, -7.5]


def _fix_lengths(raw, delta):
    """Rebuild a one-layer V1 net after growing its first blob by `delta` bytes."""
    # Outer structure: [0x12 len layer[name, type, 0x32 len blob[...], blob2]]
    layer_start = 2 if raw[1] < 0x80 else 3
    assert raw[0] == 0x12
    body = bytearray(raw[layer_start:])
    i = 0
    while body[i] != 0x32:  # skip name and type fields to the first blob
        i += 2 + body[i + 1] if body[i] == 0x22 else 2
    body[i + 1] += delta
    head = bytes([0x12]) + _varint(len(body))
    return head + bytes(body)


def _varint(n):
    out = bytearray()
    while True:
        if n < 0x80:
            out.append(n)
            return bytes(out)
        out.append((n & 0x7F) | 0x80)
        n >>= 7


def test_hdf5_caffemodel(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "w.caffemodel.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("data/conv1")
        g["0"] = np.ones((2, 3, 1, 1), np.float32)
        g["1"] = np.zeros(2, np.float32)
    _, named = read_caffemodel(str(path))
    assert named[0][0] == "conv1" and named[0][1][0].data.shape == (2, 3, 1, 1)


@pytest.mark.parametrize("mutate,expect", [
    (lambda b: b[: len(b) // 2], "runs past the end"),
    (lambda b: b"\xff" * 20, "not a valid .caffemodel"),
    (lambda b: b"", "empty file"),
    (lambda b: b"name: \"x\"\nlayer {}\n", "looks like a text prototxt"),
])
def test_corrupt_files_give_one_clear_error(tmp_path, mutate, expect):
    good = tmp_path / "good.caffemodel"
    write_caffemodel(str(good), NET, _blobs())
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(mutate(good.read_bytes()))
    with pytest.raises(CaffeError, match=expect) as e:
        read_caffemodel(str(bad))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_declared_shape_must_match_data():
    net = pb.NetParameter()
    blob = net.layer.add(name="x").blobs.add()
    blob.shape.dim.extend([1000000, 1000000])
    blob.data.extend([1, 2])
    with pytest.raises(CaffeError, match=r"declares shape \(1000000, 1000000\)"):
        parse_caffemodel(net.SerializeToString())


def test_missing_file():
    with pytest.raises(UserError, match="no such file"):
        read_caffemodel("/nonexistent/x.caffemodel")


def test_writer_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "out.caffemodel"
    with pytest.raises(Exception):
        write_caffemodel(str(target), NET, {"c1": [object()]})
    assert list(tmp_path.iterdir()) == []
