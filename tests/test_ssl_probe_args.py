"""benchmarks/ssl_probe.py refuses counts it cannot finish with before an hour of pretraining, not after:
exit 2, one line naming the flag, no output folder made."""
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "ssl_probe.py")


@pytest.fixture
def ssl_probe():
    sys.path.insert(0, os.path.dirname(SCRIPT))
    try:
        import ssl_probe
    finally:
        sys.path.pop(0)
    return ssl_probe


@pytest.mark.parametrize("flags, says", [
    (["--random-seeds", "1"], "--random-seeds 1: expected at least 2 (a standard error needs two twins)"),
    (["--pretrain-seeds", "0"], "--pretrain-seeds 0: expected at least 1"),
    (["--iters", "5"], "--iters 5: expected at least 6"),
    (["--batch-size", "0"], "--batch-size 0: expected at least 1"),
    (["--stepsize", "0"], "--stepsize 0: expected a positive number of iterations"),
    (["--store-size", "100"], "--store-size 100: the 3x3 grid of 42 px cells needs at least 126"),
    (["--limit-train", "0"], "--limit-train 0: expected at least 1"),
    (["--lbfgs-iters", "0"], "--lbfgs-iters 0: expected at least 1"),
    (["--cross-domain", "missing.pt"], "--cross-domain missing.pt: no such checkpoint file"),
    (["--draws", "0"], "--draws 0: expected at least 1"),
    (["--labels-per-class", "3", "lots"], "label budget 'lots': expected 'all', labels per class (10) or a "
                                          "fraction (0.1, 10%)"),
    (["--twin-seeds", "7", "7"], "--twin-seeds 7 7: expected at least two different seeds"),
])
def test_bad_counts_stop_before_anything_runs(tmp_path, flags, says):
    out = tmp_path / "ssl"
    r = subprocess.run([sys.executable, SCRIPT, "--out", str(out), *flags], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"ssl_probe.py: error: {says}"
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not out.exists()


def test_a_failing_step_stops_with_its_exit_code_and_one_line(ssl_probe, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        ssl_probe.sh("jigsaw.cli", "permutations", "-n", "0", "-o", str(tmp_path / "p.npy"))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == ("ssl_probe: stopped: the command above exited 2; "
                                            "what is finished is kept for a rerun")
    assert "Traceback" not in err


def test_a_captured_step_returns_its_output_and_a_failing_one_stops_too(ssl_probe, tmp_path, capsys):
    assert ssl_probe.sh("jigsaw.cli", "--version", capture=True).startswith("jigsaw ")
    with pytest.raises(SystemExit) as stop:  # evaluate of a file that is no checkpoint, as the shortcut table runs it
        ssl_probe.sh("jigsaw.cli", "evaluate", "--weights", str(tmp_path / "none.pt"), "--data",
                     str(tmp_path / "none.h5"), capture=True)
    assert stop.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_the_low_shot_report_names_the_budget_where_the_pretraining_helps_most(ssl_probe, tmp_path):
    rows = []
    for budget, gap in (("1", 0.01), ("10", 0.05), ("all", 0.002)):
        for layer in ("conv1", "conv2", "conv3", "conv4", "conv5"):
            rows.append(dict(protocol="knn", budget=budget, labels="", per_class="", layer=layer, dims=100, draws=5,
                             draw_sd=0.01, selection="", pretrained=0.5 + gap, pretrained_se=0.005, pretrained_n=3,
                             random_mean=0.5, random_se=0.005, random_sd=0.009, random_min=0.49, random_max=0.51, n=3,
                             margin_se=round(gap / (0.005 * 2 ** 0.5), 2)))
    path = tmp_path / "label_efficiency.csv"
    from transfer.probe_tables import write_csv
    write_csv(str(path), rows)
    got, text = ssl_probe.table(str(path))
    assert "labels/class" in text and "+5.0 pt" in text
    line = ssl_probe.best_margins(got)
    assert line.startswith("knn: most at 10 labels per class: conv2 +5.0 pt (+7.1 SE)") and "smallest margin +7.1 SE" in line
