"""Every plot is drawn into a temporary folder and is a non-empty PNG."""
import csv

import numpy as np
import torch
from PIL import Image

from jigsaw.plots import smooth

from transfer.backbones import build_backbone
from transfer.model import TransferModel, make_head
from transfer.plots import (_grid, plot_activation_maximisation, plot_feature_maps, plot_filters, plot_history,
                            plot_lr)

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as f:
        data = f.read()
    return data.startswith(PNG) and len(data) > 2000


def test_curves_and_lr(tmp_path):
    rows = [dict(phase=p, epoch=e, train_loss=1 / (e + 1), train_acc=e / 10, val_loss=1.2 / (e + 1),
                 val_acc=e / 12, seconds=1) for p in ("head", "finetune") for e in range(4)]
    with open(tmp_path / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(tmp_path / "lr.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["phase", "iteration", "lr"])
        w.writeheader()
        w.writerows([dict(phase="head", iteration=i, lr=0.01 * 0.9995 ** i) for i in range(200)] +
                    [dict(phase="finetune", iteration=i, lr=5e-4 * 0.2 ** (i // 50)) for i in range(200)])
    assert _is_png(plot_history(str(tmp_path))) and _is_png(plot_lr(str(tmp_path)))
    with open(tmp_path / "lr.csv", "w", newline="") as f:  # a constant rate: no flat panel, and no stale one
        w = csv.DictWriter(f, ["phase", "iteration", "lr"])
        w.writeheader()
        w.writerows([dict(phase="finetune", iteration=i, lr=0.001) for i in range(50)])
    assert plot_lr(str(tmp_path)) is None and not (tmp_path / "lr.png").exists()


def test_filters_one_and_side_by_side(tmp_path):
    a, b = torch.randn(96, 3, 11, 11), torch.randn(32, 1, 3, 3)
    assert _is_png(plot_filters(str(tmp_path / "one.png"), ("CFN conv1", a)))
    assert _is_png(plot_filters(str(tmp_path / "two.png"), ("before", a), ("after", a * 2 + 1)))
    assert Image.open(tmp_path / "two.png").size[0] == 1500  # before, after and their difference
    assert torch.equal(torch.as_tensor(_grid(a, bgr=True)), torch.as_tensor(_grid(a.flip(1))))  # drawn as RGB
    assert _is_png(plot_filters(str(tmp_path / "gray.png"), ("cnn", b)))


def test_activation_maximisation_and_feature_maps(tmp_path):
    torch.manual_seed(0)
    model = TransferModel(build_backbone("fmnist-cnn"), make_head("linear", 120, 10))
    conv = model.backbone.body[0]
    assert _is_png(plot_activation_maximisation(str(tmp_path / "filters.png"), model, conv, [0, 1, 2], 28, 1,
                                                steps=10))
    assert _is_png(plot_activation_maximisation(str(tmp_path / "classes.png"), model, model.head[-1], [0, 7],
                                                28, 1, steps=10))
    assert _is_png(plot_feature_maps(str(tmp_path / "maps.png"), model, conv, torch.randn(1, 28, 28)))


def test_smooth_is_the_trailing_mean():
    v = np.random.default_rng(0).normal(size=50)
    want = [v[max(0, i - 4):i + 1].mean() for i in range(50)]
    assert np.allclose(smooth(v, 5), want) and np.array_equal(smooth(v, 1), v)
