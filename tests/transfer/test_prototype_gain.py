"""The one-label protocol that measures features (nearest class mean) and the gain panel."""
import os

import numpy as np
import torch

from transfer.lowshot import lowshot_layer, prototype_accuracy
from transfer.plots import plot_gain
from transfer.probe_tables import lowshot_rows


def test_prototype_is_the_nearest_normalised_class_mean():
    train = torch.tensor([[1.0, 0.1], [2.0, -0.1], [0.1, 1.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1])
    test = torch.tensor([[5.0, 1.0], [0.2, 3.0], [1.0, 1.2]], dtype=torch.float64)
    # means of unit rows: class 0 ~ (1, 0), class 1 ~ (0.1, 1): the third test image is nearer class 1 by cosine
    assert prototype_accuracy(train, labels, test, torch.tensor([0, 1, 1]), 3) == 1.0
    # a class without labels (2) is never predicted
    assert prototype_accuracy(train, labels, -test, torch.tensor([2, 2, 2]), 3) == 0.0


def test_lowshot_reports_prototype_per_draw_and_rows_say_when_cv_is_noise():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 3
    y = np.repeat(np.arange(4), 30)
    x = (centres[y] + rng.normal(size=(120, 16))).astype(np.float32)
    yt = np.repeat(np.arange(4), 10)
    xt = (centres[yt] + rng.normal(size=(40, 16))).astype(np.float32)
    out, _ = lowshot_layer(x, y, xt, yt, 4, [1, 10], draws=2, seed=0, decays=[0.1, 10.0])
    assert all(0.9 <= d["prototype"] <= 1.0 for d in out["1"] + out["10"])
    lowshot = {t: {"l": out} for t in ("pretrained", "random0", "random1")}
    rows = lowshot_rows(lowshot, {}, ["l"], ["pretrained"], ["random0", "random1"], {"l": 16}, 4)
    protocols = {(r["protocol"], r["budget"]): r for r in rows}
    assert set(protocols) == {(p, b) for p in ("linear", "knn", "prototype") for b in ("1", "10")}
    assert "prefer prototype" in protocols[("linear", "1")]["selection"]
    assert protocols[("linear", "10")]["selection"] == "cross-validation in the draw"
    assert protocols[("prototype", "1")]["selection"] == "nearest class mean"


def test_the_gain_panel_is_written(tmp_path):
    rows = [dict(protocol=p, budget=b, per_class=pc, layer="conv2", pretrained=0.5 + d, pretrained_se=0.01,
                 random_mean=0.5, random_se=0.01) for p in ("knn", "prototype")
            for b, pc, d in (("1", 1, 0.02), ("10", 10, 0.03), ("all", "", 0.01))]
    path = str(tmp_path / "gain.png")
    plot_gain({"cfn": rows, "pirl": [dict(r, pretrained=r["pretrained"] + 0.05) for r in rows]}, path, "t")
    assert os.path.getsize(path) > 1000
