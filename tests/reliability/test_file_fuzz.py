"""Every reader of a user's file against mutated copies of real files (tests/reliability/fuzz_files.py): each
case in a forked child under an address-space and a CPU-time limit must read, or refuse in one line.

A new seed each run (printed with any failure, so the case replays); JIGSAW_FUZZ_SEED fixes it and
JIGSAW_FUZZ_CASES sets the count: the default keeps the suite's share under a minute on 2 cores, the long mode
(python -m tests.reliability.fuzz_files --cases 12000, or JIGSAW_FUZZ_CASES=12000) runs before a release.
The campaigns run in processes of their own: forking one, lean, costs a fraction of forking the test runner,
and the readers that import no torch run apart from those that do (a fork of a process holding torch: ~25 ms)."""
import os
import re
import subprocess
import sys

import pytest

from tests.reliability.fuzz_corpus import READERS

from .test_hostile_cli import ENV, ROOT

CASES = int(os.environ.get("JIGSAW_FUZZ_CASES") or 40 * len(READERS))
SEED = int(os.environ.get("JIGSAW_FUZZ_SEED") or int.from_bytes(os.urandom(4), "little"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the fuzzer forks a child per case")
@pytest.mark.parametrize("torch_free", [True, False], ids=["readers-without-torch", "readers-with-torch"])
def test_mutated_files_are_read_or_refused_in_one_line(torch_free):
    names = [n for n, r in READERS.items() if r.torch_free == torch_free]
    cases = CASES * len(names) // len(READERS)
    r = subprocess.run([sys.executable, "-m", "tests.reliability.fuzz_files", "--cases", str(cases), "--seed",
                        str(SEED), "--only", *names], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=3600)
    said = f"seed {SEED} (JIGSAW_FUZZ_SEED={SEED} replays the campaign)\n{r.stdout[-8000:]}\n{r.stderr[-3000:]}"
    assert r.returncode == 0, said
    rows = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^\| ([\w-]+) \| (\d+) \| \d+ \| (\d+) \|", r.stdout, re.M)}
    assert set(rows) == set(names) and all(cases and refused for cases, refused in rows.values()), said
