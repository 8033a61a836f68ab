"""`make install` picks PyTorch's CPU build without a GPU, the default wheels with one, and says so in one line."""
import functools
import http.server
import os
import subprocess
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "install_torch.py")


def _executable(path, text):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + text)
    os.chmod(path, 0o755)
    return path


@pytest.fixture
def fake(tmp_path):
    """A stand-in venv python that logs its pip command lines, and a PATH with or without nvidia-smi."""
    log = tmp_path / "pip.log"
    python = _executable(str(tmp_path / "python"),
                         f'if [ "$1" = -c ]; then exit {{torch}}; fi\necho "$@" >> {log}\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def run(*args, gpu=False, torch_installed=False, env=None):
        with open(python) as f:
            text = f.read().replace("{torch}", "0" if torch_installed else "1")
        with open(python, "w") as f:
            f.write(text)
        smi = bin_dir / "nvidia-smi"
        if gpu:
            _executable(str(smi), 'echo "GPU 0: NVIDIA H100 (UUID: GPU-0)"\n')
        elif smi.exists():
            smi.unlink()
        environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", **(env or {})}
        done = subprocess.run([sys.executable, SCRIPT, python, *args], capture_output=True, text=True,
                              env=environment)
        pip = log.read_text().splitlines() if log.exists() else []
        if log.exists():
            log.unlink()
        return done, pip

    return run


@pytest.fixture
def index(tmp_path):
    """A package index that answers over HTTP on localhost."""
    root = tmp_path / "index"
    (root / "torch").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_no_gpu_installs_the_cpu_build_from_the_cpu_index(fake, index):
    done, pip = fake("--index", index)
    assert done.returncode == 0, done.stderr
    assert len(pip) == 1 and f"--index-url {index}" in pip[0] and "torch>=2.13,<2.15" in pip[0]
    assert done.stdout.strip().splitlines() == [
        f"install_torch: no NVIDIA GPU found: installing the CPU build of PyTorch from {index}"
        " (.venv about 1.7 GB)"]


def test_the_bounds_are_setup_cfgs(fake, index):
    with open(os.path.join(ROOT, "setup.cfg")) as f:
        wanted = [line.strip() for line in f if line.strip().startswith(("torch>", "torch<", "torch=", "torchvision"))]
    assert len(wanted) == 2
    for gpu in (False, True):
        _, pip = fake("--index", index, gpu=gpu)
        assert pip[0].split()[-2:] == wanted


def test_a_gpu_keeps_the_default_wheels(fake, index):
    done, pip = fake("--index", index, gpu=True)
    assert done.returncode == 0 and len(pip) == 1 and "--index-url" not in pip[0]
    assert "an NVIDIA GPU is present" in done.stdout


def test_an_unreachable_cpu_index_falls_back_in_one_line(fake, tmp_path):
    missing = (tmp_path / "nowhere").as_uri()  # no such folder: nothing answers
    done, pip = fake("--index", missing)
    assert done.returncode == 0 and len(pip) == 1 and "--index-url" not in pip[0]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "cannot be reached" in lines[0] and missing in lines[0]


def test_cpu_1_and_0_override_the_detection(fake, index):
    _, pip = fake("--index", index, gpu=True, env={"CPU": "1"})
    assert "--index-url" in pip[0]
    _, pip = fake("--index", index, env={"CPU": "0"})
    assert "--index-url" not in pip[0]
    done, pip = fake("--index", index, env={"CPU": "yes"})
    assert done.returncode == 2 and pip == [] and "invalid choice" in done.stderr


def test_an_installed_torch_is_kept(fake):
    done, pip = fake(torch_installed=True)
    assert done.returncode == 0 and pip == [] and done.stdout == ""


def test_the_makefile_installs_torch_before_the_package():
    with open(os.path.join(ROOT, "Makefile")) as f:
        recipe = f.read()
    assert recipe.index("install_torch.py $(PY)") < recipe.index("pip install --quiet -e '.[test]'")
