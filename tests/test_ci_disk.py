"""`.ci/disk.py`: CI's line on free disk space says LOW when less is free than the step needs."""
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".ci", "disk.py")


def _line(need):
    done = subprocess.run([sys.executable, SCRIPT, str(need), "before", "the", "tests"], capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def test_enough_space_is_one_plain_line():
    line = _line(0)
    assert line.startswith("disk before the tests: clone ") and " GB free" in line and "LOW" not in line


def test_too_little_space_says_low_and_why():
    line = _line(1e9)
    assert "LOW: about 1e+09 GB is needed; failures below may be a full disk" in line
