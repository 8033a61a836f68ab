"""Early stopping and freezing: tests that fail if patience/eps or requires_grad/BatchNorm were wrong."""
import pytest
import torch
from torch import nn

from tools.run.errors import UserError
from transfer.backbones import build_backbone
from transfer.early_stopping import EarlyStopping
from transfer.model import TransferModel, make_head


def _model():
    return nn.Linear(2, 1)


def test_patience_counts_epochs_without_improvement_by_more_than_eps():
    m, es = _model(), EarlyStopping(patience=2, eps=0.1)
    assert not es.step(0, 1.0, m)
    assert not es.step(1, 0.95, m)      # improved by 0.05 < eps: does not count as better
    assert es.step(2, 0.92, m)          # second epoch without a real improvement: stop
    assert es.best_epoch == 0 and es.best == 1.0
    es = EarlyStopping(patience=2, eps=0.1)
    for epoch, loss in enumerate([1.0, 0.85, 0.80, 0.70, 0.65]):
        stopped = es.step(epoch, loss, m)
    assert es.best_epoch == 3 and not stopped


def test_best_weights_restored_whether_or_not_stopping_fired():
    m, es = _model(), EarlyStopping(patience=10)
    with torch.no_grad():
        m.weight.fill_(1.0)
    es.step(0, 0.5, m)
    with torch.no_grad():
        m.weight.fill_(7.0)
    es.step(1, 0.9, m)
    assert not es.fired
    es.restore(m)
    assert torch.all(m.weight == 1.0)


def test_head_is_xavier_and_spec_parses():
    head = make_head("1024,dropout:0.5,512", 64, 10)
    linears = [l for l in head if isinstance(l, nn.Linear)]
    assert [l.out_features for l in linears] == [1024, 512, 10]
    bound = (6 / (512 + 10)) ** 0.5
    assert linears[-1].weight.abs().max() <= bound and linears[-1].bias.abs().max() == 0
    with pytest.raises(UserError, match="cannot read"):
        make_head("1024,relu6", 64, 10)


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics():
    model = TransferModel(build_backbone("basenet++"), make_head("linear", 64, 25))
    model.freeze_backbone()
    model.train()  # must not re-enable BatchNorm updates in the frozen part
    bn = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)][0]
    before = bn.running_mean.clone()
    w_before = model.backbone.body[0].weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        loss = model(torch.randn(8, 3, 32, 32) * 3 + 1).sum()
        loss.backward()
        opt.step()
    assert torch.equal(bn.running_mean, before) and not bn.training
    assert torch.equal(model.backbone.body[0].weight, w_before)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    model.unfreeze_all()
    model.train()
    assert bn.training and all(p.requires_grad for p in model.backbone.parameters())


@pytest.mark.needs_torchvision
def test_unfreezing_named_blocks_only():
    model = TransferModel(build_backbone("resnet50", weights="none"), make_head("linear", 2048, 3))
    model.freeze_backbone(except_blocks=("layer4",))
    trainable = {n.split(".")[1] for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"layer4"}
    with pytest.raises(UserError, match="unknown block"):
        model.freeze_backbone(except_blocks=("layer9",))
