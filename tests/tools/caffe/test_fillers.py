"""tools.caffe.fillers.Filler, the protobuf-free FillerParameter a model built in code hands to `fill`: caffe.proto's
defaults, and the same numbers as the message for every filler type."""
import dataclasses

import pytest
import torch

from tools.caffe import caffe_pb2 as pb
from tools.caffe.fillers import Filler, fill


def test_the_defaults_are_caffe_protos():
    message = pb.FillerParameter()
    assert {f.name: getattr(message, f.name) for f in dataclasses.fields(Filler)} == dataclasses.asdict(Filler())


@pytest.mark.parametrize("settings", [dict(type="gaussian", std=0.01), dict(type="msra"), dict(type="xavier"),
                                      dict(type="msra", variance_norm=2), dict(type="uniform", min=-0.5, max=0.5),
                                      dict(type="constant", value=0.25), dict(type="positive_unitball"),
                                      dict(type="gaussian", std=0.1, sparse=3), dict(type="bilinear")])
def test_fill_gives_the_messages_numbers(settings):
    shape = (6, 4, 3, 3)
    got, want = torch.empty(shape), torch.empty(shape)
    fill(got, Filler(**settings), torch.Generator().manual_seed(7))
    fill(want, pb.FillerParameter(**settings), torch.Generator().manual_seed(7))
    assert torch.equal(got, want)
