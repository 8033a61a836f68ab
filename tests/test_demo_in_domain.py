"""demo.py's in-domain step, shrunk: Fashion-MNIST images without labels -> a pretraining with the kNN monitor ->
kNN and low-shot probes against twins -> one sentence saying whether the pretraining beat random."""
import csv
import os

import pytest

import demo
from transfer.datasets import FASHION_MNIST_DEBIAN


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DEBIAN), reason="needs Debian's dataset-fashion-mnist")
def test_the_in_domain_step_ends_with_a_verdict(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "IN_DOMAIN", dict(images=200, iters=4, labelled=300, test=100, budgets=("2", "5"),
                                                draws=2, monitor_per_class=3, monitor_queries=30))
    verdict = demo.in_domain(str(tmp_path), seed=0, gpu=False)
    assert verdict.startswith("in-domain (4 iterations without labels; against 3 random-init twins")
    assert "beat random by > 3 SE at" in verdict or "did NOT beat random" in verdict
    printed = capsys.readouterr().out
    assert "linear              5" in printed and "knn               all" in printed
    with open(tmp_path / "in_domain" / "pretrain" / "val.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["iter"] for r in rows] == ["0", "2", "4"] and all(r["knn_conv3"] for r in rows)
    for name in ("pretrain/curves.png", "probe/probe.png", "probe/label_efficiency.png", "probe/label_efficiency.csv"):
        assert (tmp_path / "in_domain" / name).exists(), name
    assert {p for p in demo.plots_made(True) if p.startswith("in_domain/")} == {
        "in_domain/pretrain/curves.png", "in_domain/probe/probe.png", "in_domain/probe/label_efficiency.png"}


def test_the_closing_list_names_the_probe_plot():
    assert "in_domain/probe/probe.png" in demo.plots_made(True) and "probe/probe.png" in demo.plots_made(False)
