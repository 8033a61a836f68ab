"""Every plot is drawn into a temporary folder and is a non-empty PNG."""
import csv

import numpy as np
import torch

from jigsaw.plots import smooth
from transfer.probe_tables import write_csv
from tests.figures import drawn, horizontal_lines, texts, vertical_lines

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


def test_lr_shows_each_phase_in_turn_with_named_rates(tmp_path, monkeypatch):
    write_csv(tmp_path / "lr.csv", [dict(phase="last layer", iteration=i, lr=0.01) for i in range(40)] +
           [dict(phase="fine-tune", iteration=i, lr=1e-3 * 0.1 ** (i // 30)) for i in range(90)])
    path, (fig,) = drawn(monkeypatch, plot_lr, str(tmp_path))
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "iteration" in ax.get_xlabel() and ax.get_ylabel()
    steps = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
    assert [list(line.get_xdata()[[0, -1]]) for line in steps] == [[0, 39], [40, 129]]  # one after the other
    assert vertical_lines(ax) == [39.5]  # the phase boundary
    ticks = {t.get_text() for t in ax.get_yticklabels()}
    assert {"0.01", "0.001", "0.0001", "1e-05"} <= ticks
    assert {"last layer", "fine-tune"} <= {t.get_text().strip() for t in ax.texts}


def test_filters_before_and_after_share_a_scale_and_the_difference_has_a_colour_bar(tmp_path, monkeypatch):
    a = torch.randn(16, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    _, (fig,) = drawn(monkeypatch, plot_filters, str(tmp_path / "f.png"), ("before", a), ("after", 2 * a))
    panels, bar = fig.axes[:3], fig.axes[3:]
    before, after = (np.asarray(ax.get_images()[0].get_array()) for ax in panels[:2])
    # each filter scaled by the larger of its two versions: the doubled filters reach further from mid-grey
    inside = before != 1.0  # not the white padding between filters
    assert np.isclose(np.abs(after[inside] - 0.5).max(), 0.5) and np.isclose(np.abs(before[inside] - 0.5).max(), 0.25)
    diff = panels[2].get_images()[0]
    assert diff.get_cmap().name == "RdBu_r" and diff.get_clim()[0] == -diff.get_clim()[1]
    assert len(bar) == 1 and bar[0].get_ylabel() == "weight change"
    assert "relative change" in panels[2].get_title() and "= 1\n" not in panels[2].get_title()
    assert "= 1" in panels[2].get_title() and "moved by 100.0 %" in fig._suptitle.get_text()


def test_probe_plot_labels_its_axes_and_marks_chance(tmp_path, monkeypatch):
    from transfer.plots import plot_probe
    rows = [dict(layer=layer, dims=d, pretrained=p, pretrained_se=0.0, random_mean=r, random_se=0.01, n=3)
            for layer, d, p, r in (("conv1", 4096, 0.5, 0.45), ("conv2", 2048, 0.6, 0.5))]
    _, (fig,) = drawn(monkeypatch, plot_probe, {"linear": rows, "knn": rows}, str(tmp_path / "p.png"), "t",
                      chance=0.1)
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and horizontal_lines(ax) == [0.1]
    legend = " | ".join(texts(ax))
    assert "chance" in legend and "linear probe" in legend and "kNN" in legend
