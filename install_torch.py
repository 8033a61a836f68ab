"""Installs PyTorch into a virtual environment: the CPU build where there is no NVIDIA GPU, else the default wheels.

`make install` (and so `make test` / `make demo`) runs it before the package; standard library only.
"""
import argparse
import os
import shutil
import subprocess
import sys
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
SETUP_CFG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "setup.cfg")


def requirements(setup_cfg: str = SETUP_CFG) -> list:
    """torch's and torchvision's lines of setup.cfg's install_requires: the CPU index holds every release, so the
    package's own bounds pick the same series there."""
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(setup_cfg)
    lines = [r.strip() for r in cfg["options"]["install_requires"].splitlines()]
    found = [r for r in lines if r.split(">")[0].split("<")[0].split("=")[0].strip() in ("torch", "torchvision")]
    if len(found) != 2:
        raise SystemExit(f"install_torch: {setup_cfg}: expected torch and torchvision in install_requires, "
                         f"found {found}")
    return found


def has_nvidia_gpu() -> bool:
    """True when `nvidia-smi -L` lists a GPU (no driver, no GPU: False)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "GPU" in done.stdout


def reachable(index: str, timeout: float = 10.0) -> bool:
    """Whether the package index answers (its torch page), within `timeout` seconds."""
    url = index.rstrip("/") + "/torch/"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            answer.read(1)
        return True
    except (OSError, ValueError):
        return False


def has_torch(python: str) -> bool:
    done = subprocess.run([python, "-c", "import torch, torchvision"], capture_output=True)
    return done.returncode == 0


def plan(cpu: str, index: str, gpu: bool, index_up: bool) -> tuple:
    """(extra pip arguments, the line to say): the CPU index, or the default wheels."""
    want_cpu = cpu == "1" or (cpu == "auto" and not gpu)
    if not want_cpu:
        why = "CPU=0" if cpu == "0" else "an NVIDIA GPU is present"
        return [], f"install_torch: {why}: installing the default PyTorch wheels (with CUDA: .venv about 6.1 GB)"
    if not index_up:
        return [], (f"install_torch: the CPU package index {index} cannot be reached; "
                    "installing the default PyTorch wheels instead (with CUDA: .venv about 6.1 GB, not 1.7 GB)")
    why = "CPU=1" if cpu == "1" else "no NVIDIA GPU found"
    return ["--index-url", index], (f"install_torch: {why}: installing the CPU build of PyTorch from {index} "
                                    "(.venv about 1.7 GB)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, allow_abbrev=False)
    parser.add_argument("python", help="the virtual environment's python")
    parser.add_argument("--cpu", choices=("auto", "0", "1"), default=os.environ.get("CPU") or "auto",
                        help="1: the CPU build; 0: the default wheels; auto (default): CPU unless nvidia-smi "
                             "lists a GPU")
    parser.add_argument("--index", default=os.environ.get("TORCH_CPU_INDEX") or CPU_INDEX,
                        help=f"the CPU build's package index (default {CPU_INDEX}; env TORCH_CPU_INDEX)")
    args = parser.parse_args(argv)
    if args.cpu not in ("auto", "0", "1"):  # argparse checks choices on the command line, not on a default
        parser.error(f"argument --cpu: invalid choice: {args.cpu!r} (CPU= takes 1, 0 or nothing)")
    if has_torch(args.python):
        return 0  # keep what is installed: `make clean` starts over
    gpu = args.cpu == "auto" and has_nvidia_gpu()
    index_up = args.cpu != "0" and not gpu and reachable(args.index)
    extra, line = plan(args.cpu, args.index, gpu, index_up)
    print(line, flush=True)
    command = [args.python, "-m", "pip", "install", "--quiet", *extra, *requirements()]
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
