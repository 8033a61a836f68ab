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
