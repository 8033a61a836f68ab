"""The fuzzer's torchvision-trunk files (fuzz_corpus.READERS takes them where torchvision loads): a `jigsaw train
--trunk` checkpoint and VISSL's checkpoint layout, each read back by transfer's backbone reader."""
import os


def trunk_checkpoint(folder):
    """A `jigsaw train --trunk resnet18 --width 0.125` run's last.pt, as transfer reads it."""
    from types import SimpleNamespace
    from jigsaw.checkpoint import trunk_payload
    from jigsaw.methods import build_model
    from jigsaw.permutations import make_permutations
    from tools.run.checkpoint import save_checkpoint
    cfg = SimpleNamespace(trunk="resnet18", width=0.125, method="jigsaw", seed=0, dropout=0.0, init="caffe")
    model = build_model(cfg, 4, 32, 0)
    save_checkpoint(os.path.join(folder, "last.pt"), trunk_payload(
        cfg, model, make_permutations(4, seed=0), dict(recipe="paper", recipe_options={}), 3, {}, {}, 32))
    return folder, ("last.pt",)


def vissl_checkpoint(folder):
    """VISSL's training checkpoint layout (classy_state_dict -> base_model -> model -> trunk, `_feature_blocks.`)."""
    from tools.nets.trunks import build_trunk
    from tools.run.checkpoint import save_checkpoint
    trunk = {f"_feature_blocks.{k}": v for k, v in build_trunk("resnet18", seed=0).torchvision_state().items()}
    save_checkpoint(os.path.join(folder, "model.pth"), dict(
        iteration=5, classy_state_dict=dict(base_model=dict(model=dict(trunk=trunk, heads={})))))
    return folder, ("model.pth",)


def read_backbone(name, arch):
    def read(root):
        from transfer.backbones import build_backbone
        backbone = build_backbone(arch, os.path.join(root, name))
        return backbone.feature_dim, backbone.input_size
    return read


def has_torchvision():
    from tools.run.errors import UserError
    from tools.run.runtime import import_torchvision
    try:
        import_torchvision()
        return True
    except UserError:
        return False
