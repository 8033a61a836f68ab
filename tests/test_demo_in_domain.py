"""`make demo` on a fresh machine, shrunk: no Debian package and no copy, so Fashion-MNIST is downloaded (from a
local server standing in for the dataset's address, tiny files pinned as the real ones are), said in the first
lines; then the in-domain step (its images without labels -> a pretraining with the kNN monitor -> kNN and
low-shot probes against twins) ends the run with one verdict line per protocol."""
import csv

import pytest

import demo
import transfer.downloads as downloads
from tests.transfer.fmnist_server import Server, idx_files, pinned

TINY = dict(images=200, iters=4, labelled=200, test=60, budgets=("2",), draws=2, monitor_per_class=3,
            monitor_queries=30)


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch):
    files = idx_files()
    monkeypatch.setattr(downloads, "FASHION_MNIST_DEBIAN", str(tmp_path / "no-debian-package"))
    monkeypatch.setattr(downloads, "FASHION_MNIST_FILES", pinned(files))
    monkeypatch.delenv(downloads.ENV_FOLDER, raising=False)
    monkeypatch.setenv(downloads.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "IN_DOMAIN", TINY)
    with Server(files) as server:
        monkeypatch.setenv(downloads.ENV_URL, server.url)
        yield server


def test_a_fresh_machine_downloads_fashion_mnist_and_ends_with_the_in_domain_verdict(tmp_path, fresh_machine, capsys):
    demo.main(["--out", str(tmp_path / "out"), "--iters", "4"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"Fashion-MNIST: downloading 4 files (") and fresh_machine.url in lines[0]
    assert lines[1] == (f"labelled data: Fashion-MNIST in {downloads.cache_folder()} (downloaded from "
                        f"{fresh_machine.url}): the in-domain verdict comes at step 6")
    printed = "\n".join(lines)
    for table in ("standardised kNN:\nprotocol", "centred kNN:\nprotocol", "linear:\nprotocol", "prototype:\nprotocol"):
        assert table in printed, table
    verdict = printed[printed.index("in-domain (4 iterations without labels; against 3 random-init twins; 2 labels "
                                    "per class and every label):"):].splitlines()
    assert verdict[1].startswith("  standardised kNN (the benchmark's protocol): ")
    assert verdict[2].startswith("  centred kNN: ") and verdict[3].startswith("  linear: ")
    assert all("beat random by > 3 SE at" in v or "did NOT beat random" in v for v in verdict[1:5])
    assert lines[-2].startswith("plots in ") and lines[-1].startswith("total ")
    out = tmp_path / "out"
    with open(out / "in_domain" / "pretrain" / "val.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["iter"] for r in rows] == ["0", "2", "4"] and all(r["knn_conv3"] for r in rows)
    for name in ("pretrain/curves.png", "probe/probe.png", "probe/label_efficiency.png", "probe/label_efficiency.csv"):
        assert (out / "in_domain" / name).exists(), name
    with open(out / "in_domain" / "probe" / "config.json") as f:  # the tables left on disk: the benchmark's protocol
        assert '"knn_features": "standardised"' in f.read()


def test_without_fashion_mnist_the_first_line_names_the_fallback(tmp_path, fresh_machine, capsys):
    fresh_machine.behaviour["train-images-idx3-ubyte.gz"] = "missing"
    args = demo.argparse.Namespace(labelled="auto", data_root=None, no_download=False)
    assert demo.labelled_data(args) is None
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("labelled data: FALLBACK to crops labelled by photograph, without the in-domain verdict: "
                             f"{fresh_machine.url}train-images-idx3-ubyte.gz: the server answered 404")
    assert out[1].endswith("(or: apt-get install dataset-fashion-mnist (Debian; it puts the files in "
                           "/usr/share/datasets/fashion-mnist), or --data-root FOLDER / JIGSAW_FASHION_MNIST=FOLDER "
                           "with the four idx files, or let it download them (about 30 MB from "
                           f"{downloads.FASHION_MNIST_URL}))")
    args.labelled = "fashion-mnist"  # asked for by name: an error, not a fallback
    with pytest.raises(SystemExit, match="^demo.py: error: .*answered 404"):
        demo.labelled_data(args)
    args.no_download = True
    with pytest.raises(SystemExit, match="not on this machine; apt-get install"):
        demo.labelled_data(args)
    assert fresh_machine.ranges == [("train-images-idx3-ubyte.gz", None)] * 2  # --no-download asked for nothing


def test_the_closing_list_names_the_probe_plot():
    assert "in_domain/probe/probe.png" in demo.plots_made(True) and "probe/probe.png" in demo.plots_made(False)
