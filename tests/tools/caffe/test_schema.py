"""The generated caffe_pb2 stays in step with caffe.proto, and real-world text quirks parse."""
import warnings

import pytest

from tools.caffe import caffe_pb2 as pb
from tools.caffe import protogen
from tools.run.errors import CaffeError
from tools.caffe.textformat import UnknownFieldWarning, parse_text


def test_generated_module_is_in_step_with_the_proto():
    pytest.importorskip("grpc_tools")
    with open(protogen.MODULE) as f:
        assert f.read() == protogen.render(protogen.compile_descriptor()), \
            "tools/caffe/caffe_pb2.py is stale: run `make proto`"


@pytest.mark.parametrize("message,field,number", [
    ("NetParameter", "layer", 100), ("NetParameter", "layers", 2), ("NetParameter", "input_dim", 4),
    ("LayerParameter", "blobs", 7), ("LayerParameter", "convolution_param", 106),
    ("LayerParameter", "batch_norm_param", 139), ("LayerParameter", "input_param", 143),
    ("BlobProto", "data", 5), ("BlobProto", "double_data", 8), ("BlobProto", "shape", 7),
    ("V1LayerParameter", "blobs_lr", 7), ("V1LayerParameter", "layer", 1),
    ("TransformationParameter", "hash_file", 8), ("TransformationParameter", "gap_size", 9),
    ("TransformationParameter", "jitter_size", 10), ("TransformationParameter", "siamese_size", 11),
    ("TransformationParameter", "patch_size", 12), ("SolverParameter", "momentum2", 39),
    ("SolverParameter", "iter_size", 36), ("SolverParameter", "type", 40),
])
def test_field_numbers_match_caffe(message, field, number):
    assert getattr(pb, message).DESCRIPTOR.fields_by_name[field].number == number


JIGSAW_DATA_LAYER = '''
layer {
  name: "data" type: "Data" top: "data" top: "label"
  include { phase: TRAIN }
  transform_param { mirror: false crop_size: 225 mean_value: 104 mean_value: 117 mean_value: 123
    hash_file: "permutations_100.bin" gap_size: 21 jitter_size: 21 siamese_size: 9 patch_size: 64 }
  data_param { source: "ilsvrc12_train_lmdb" batch_size: 256 backend: LMDB }
}
'''


def test_jigsaw_fork_transform_fields_parse():
    net = parse_text(JIGSAW_DATA_LAYER, pb.NetParameter())
    tp = net.layer[0].transform_param
    assert (tp.hash_file, tp.jitter_size, tp.siamese_size, tp.patch_size) == \
        ("permutations_100.bin", 21, 9, 64)


def test_unknown_fields_warn_with_location_and_are_skipped():
    text = 'layer { name: "m" type: "MergeData" merge_param { n: 9 nested { x: [1, 2] } } top: "t" }'
    with pytest.warns(UnknownFieldWarning, match=r"x.prototxt:1:\d+: unknown field 'merge_param'"):
        net = parse_text(text, pb.NetParameter(), "x.prototxt")
    assert net.layer[0].top == ["t"]


@pytest.mark.parametrize("text,expect", [
    ('layer { name: "a"', "missing '}'"),
    ('layer { name: 3 }', "expects a quoted string"),
    ('layer { type: "x" type: "y" }', "given twice"),
    ('layer { convolution_param { num_output: -1 } }', "out of range"),
    ('layer { include { phase: TRAINING } }', "TRAIN, TEST"),
    ('layer { name: "a" } }', "expected a field name"),
    ('layer { name: "a" @ }', "unexpected character"),
    ('layer { lrn_param { alpha: abc } }', "expects a number"),
])
def test_syntax_errors_name_file_line_and_column(text, expect):
    with pytest.raises(CaffeError, match=expect) as e:
        parse_text(text, pb.NetParameter(), "bad.prototxt")
    assert str(e.value).startswith("bad.prototxt:1:") or "at end of file" in str(e.value)
    assert "\n" not in str(e.value)


def test_text_format_variants():
    text = '''# comment
    name: 'single' "concat"
    layer < name: "a" type: "ReLU"; bottom: "x" top: "x" >
    layer { name: "b" type: "Convolution" convolution_param { pad: [1, 2] kernel_size: 3
            weight_filler { std: 1e-2 value: 0x10 } bias_filler { value: .5f } } }
    layer { name: "c" type: "Power" power_param { power: -inf } }
    '''
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = parse_text(text, pb.NetParameter())
    assert net.name == "singleconcat"
    c = net.layer[1].convolution_param
    assert list(c.pad) == [1, 2] and c.weight_filler.value == 16 and c.bias_filler.value == 0.5
    assert net.layer[2].power_param.power == float("-inf")
