"""The torchvision trunks both jigsaw and transfer build: stages, widths, seeds, torchvision's own names."""
import pytest
import torch

from tools.nets import TRUNK_NAMES
from tools.nets.trunks import FAMILIES, build_trunk, load_torchvision_state
from tools.run.errors import UserError

pytestmark = pytest.mark.needs_torchvision


@pytest.mark.parametrize("arch,width", [("resnet18", 0.25), ("resnet50", 0.125), ("mobilenet_v3_large", 0.5),
                                        ("vgg16", 1.0)])
def test_every_stage_is_seen_and_the_pooled_features_have_dim_values(arch, width):
    trunk = build_trunk(arch, width, seed=0).eval()
    seen = {}
    for name in trunk.stage_names:
        trunk.stage(name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape))
    with torch.no_grad():
        out = trunk(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, trunk.dim) and list(seen) == list(trunk.stage_names)
    sides = [s[-1] for s in seen.values()]
    assert sides == sorted(sides, reverse=True)  # first to last: the resolution only falls
    assert trunk.body()(torch.randn(2, 3, 64, 64)).flatten(1).shape == (2, trunk.dim)


def test_the_seed_decides_the_weights_and_leaves_torchs_global_stream_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, c = (build_trunk("resnet18", 0.25, seed=s) for s in (1, 1, 2))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.net.conv1.weight, b.net.conv1.weight) and not torch.equal(a.net.conv1.weight, c.net.conv1.weight)


def test_width_one_exports_a_plain_torchvision_state_dict():
    import torchvision
    for arch, head in (("resnet50", ["fc.weight", "fc.bias"]), ("mobilenet_v3_large", None),
                       ("resnet18", ["fc.weight", "fc.bias"])):
        model = getattr(torchvision.models, arch)()
        missing, unexpected = model.load_state_dict(build_trunk(arch).torchvision_state(), strict=False)
        assert not unexpected
        if head:
            assert missing == head
        else:
            assert missing and all(k.startswith("classifier.") for k in missing)
    narrow = sum(p.numel() for p in build_trunk("resnet18", 0.25).parameters())
    assert narrow < sum(p.numel() for p in build_trunk("resnet18").parameters()) / 10


def test_wrong_names_widths_and_weights_are_one_line():
    assert tuple(FAMILIES) == TRUNK_NAMES
    with pytest.raises(UserError, match="resnet18"):
        build_trunk("resnet81")
    with pytest.raises(UserError, match="vgg16 has no width multiplier"):
        build_trunk("vgg16", 0.5)
    trunk = build_trunk("resnet18", 0.25)
    with pytest.raises(UserError, match="conv1.weight is .* at width 1 has"):
        load_torchvision_state(build_trunk("resnet18"), trunk.torchvision_state(), "w.pth")
    with pytest.raises(UserError, match="w.pth: missing"):
        load_torchvision_state(trunk, {}, "w.pth")
