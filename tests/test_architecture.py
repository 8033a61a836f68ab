"""What the packages share: user errors vs bugs in the command lines, settings as options, light imports."""
import argparse
import dataclasses
import os
import subprocess
import sys
from typing import Optional

import pytest

from tools.run.cli_runner import run_cli
from tools.run.errors import CaffeError, UserError
from tools.run.options import add_options, given, option
from tools.run.runtime import resolve_device, seed_of, stream, use_bf16

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tools", "jigsaw", "transfer", "benchmarks")


def _sources(*packages):
    """The project's own .py files (relative paths), under the given packages (all of them by default)."""
    import glob
    out = []
    for package in packages or PACKAGES:
        out += glob.glob(os.path.join(package, "**", "*.py"), root_dir=ROOT, recursive=True)
    return sorted(out) + (["demo.py"] if not packages else [])


def _read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


def test_a_user_error_is_one_line_and_exit_2_but_a_bug_keeps_its_traceback(capsys):
    def bad_file(args):
        raise CaffeError("net.prototxt:3: expected a layer")

    assert run_cli("prog", bad_file, None) == 2
    assert capsys.readouterr().err == "prog: error: net.prototxt:3: expected a layer\n"
    assert run_cli("prog", lambda a: open(os.path.join(ROOT, "no-such-file")), None) == 2
    assert "no-such-file: No such file or directory" in capsys.readouterr().err

    def bug(args):
        return int("not a number")  # a ValueError from our own code is not the user's mistake

    with pytest.raises(ValueError, match="invalid literal"):
        run_cli("prog", bug, None)
    assert issubclass(CaffeError, UserError)


@dataclasses.dataclass
class _Settings:
    out: str = option(help="where")
    rate: float = option(0.5, "a rate")
    count: Optional[int] = option(None, "how many", type=int)
    names: tuple = option((), "some names", nargs="*")
    fast: bool = option(False, "go fast")
    progress: bool = option(True, "no progress bar")
    hidden: int = 3  # no help: not an option


def test_options_are_derived_from_the_dataclass_with_defaults_written_once():
    p = argparse.ArgumentParser()
    add_options(p, _Settings)
    args = p.parse_args(["--out", "o", "--count", "4", "--names", "a", "b", "--fast", "--no-progress"])
    cfg = _Settings(**given(_Settings, args))
    assert cfg == _Settings(out="o", rate=0.5, count=4, names=("a", "b"), fast=True, progress=False)
    assert "(default 0.5)" in p.format_help() and "--hidden" not in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args([])  # --out is required: the field has no default
    unset = argparse.ArgumentParser()
    add_options(unset, _Settings, unset=True)
    assert given(_Settings, unset.parse_args(["--out", "o"])) == {"out": "o"}  # the rest: not given


def test_runtime_device_precision_and_named_streams():
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(UserError, match="no CUDA device"):
            resolve_device("cuda")
    assert use_bf16("bf16", resolve_device("cpu")) and not use_bf16("auto", resolve_device("cpu"))
    with pytest.raises(UserError, match="precision 'fp16'"):
        use_bf16("fp16", resolve_device("cpu"))
    assert seed_of(0, 5) == seed_of(0, 5) != seed_of(0, 6) != seed_of(1, 5)
    a, b = stream(3, 1), stream(3, 1)
    assert a.initial_seed() == b.initial_seed() == seed_of(3, 1)


@pytest.mark.parametrize("module", ["tools.run.errors", "tools", "jigsaw", "jigsaw.cli", "transfer.cli"])
def test_light_imports_do_not_load_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_lazy_package_names_resolve():
    import jigsaw
    import tools
    assert tools.load_caffe_net.__module__ == "tools.caffe.net" and jigsaw.CFN.__module__ == "jigsaw.cfn"
    with pytest.raises(AttributeError):
        tools.no_such_name


def test_both_registries_refuse_a_name_registered_twice():
    from tools.caffe.layers import LAYERS
    from tools.caffe.layers.base import Layer, register as register_layer
    from transfer.backbones import BACKBONES, register as register_backbone
    before_layers, before_backbones = dict(LAYERS), dict(BACKBONES)
    with pytest.raises(ValueError, match="'Convolution' is registered twice"):
        register_layer("Convolution")(type("Other", (Layer,), {}))
    with pytest.raises(ValueError, match="'cfn' is registered twice"):
        register_backbone("cfn")(lambda **kw: None)
    assert LAYERS == before_layers and BACKBONES == before_backbones


def test_the_cfn_layer_names_and_their_count_are_spelled_in_architecture_py_only():
    """transfer builds a CFN branch from jigsaw.architecture's names, never its own copy of them."""
    import re
    for path in ("transfer/backbones.py", "transfer/twins.py", "transfer/probe.py", "transfer/monitor.py"):
        text = open(os.path.join(ROOT, path)).read()
        assert not re.search(r"cfn\.conv[1-5]|\bconv1, conv2|1 / 8\b", text), path


def test_the_cfn_checkpoint_is_read_only_through_jigsaw_checkpoint_py():
    import glob
    import re
    paths = [p for p in glob.glob(os.path.join(ROOT, "jigsaw", "*.py")) if not p.endswith("checkpoint.py")]
    paths += glob.glob(os.path.join(ROOT, "benchmarks", "*.py")) + [os.path.join(ROOT, "demo.py")]
    for path in paths:
        text = open(path).read()
        assert not re.search(r"load_checkpoint\(|torch\.load\(", text), path  # a checkpoint's keys need it loaded


def test_files_are_replaced_only_through_tools_atomic():
    """One way to write a file as a unit: no module but tools/run/atomic.py renames a temporary file into place
    (jigsaw prepare's resumable .partial store, the probe's float16 memmaps, ssl_probe's folders of PNGs,
    the proto generator and export's traced file aside, each renamed once by design)."""
    import re
    allowed = {"tools/run/atomic.py", "jigsaw/store.py", "transfer/features.py", "tools/caffe/protogen.py",
               "tools/caffe/export.py", "benchmarks/ssl_probe.py"}
    sources = _sources()
    assert "tools/caffe/layers/output.py" in sources and len(sources) > 80
    for rel in sources:
        if rel not in allowed:
            assert not re.search(r"os\.(replace|rename)\(|def atomic_", _read(rel)), rel


def test_the_smallest_image_side_is_written_once():
    import glob
    import re
    hits = [(os.path.relpath(p, ROOT), m) for p in glob.glob(os.path.join(ROOT, "jigsaw", "*.py"))
            for m in re.findall(r"min_side\s*=\s*\d+|MIN_SIDE\s*=\s*\d+|--min-side.*default=\d+", open(p).read())]
    assert hits == [("jigsaw/config.py", "MIN_SIDE = 64")], hits


def test_importing_the_cfn_loads_no_option_parser_run_record_or_layer_registry():
    code = ("import sys, jigsaw.cfn; print(sorted(m for m in sys.modules if m in ('tools.run.options', 'tools.run.runrecord', "
            "'tools.caffe.layers', 'tools.run.cli_runner', 'jigsaw.config', 'tools.caffe.prototxt', 'tools.caffe.caffemodel')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
