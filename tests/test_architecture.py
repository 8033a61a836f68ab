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


def test_every_jigsaw_command_takes_its_defaults_from_a_config_dataclass():
    """jigsaw's command line writes no default of its own; what a file, a record or Python gives is checked
    by the config itself (choices, positive numbers), so run code does not check it again."""
    import re
    from jigsaw.cli import build_parser
    from jigsaw.config import ConvertConfig, EvaluateConfig, PermutationsConfig, PrepareConfig
    from transfer.config import FinetuneConfig
    assert not re.search(r"default=", _read("jigsaw/cli.py"))
    sub = build_parser()._subparsers._group_actions[0].choices
    for command, cls in (("permutations", PermutationsConfig), ("prepare", PrepareConfig),
                         ("evaluate", EvaluateConfig), ("convert", ConvertConfig)):
        for f in dataclasses.fields(cls):
            action = next(a for a in sub[command]._actions if a.dest == f.name)
            if f.default is not dataclasses.MISSING:
                assert action.default == f.default, (command, f.name)
    with pytest.raises(UserError, match="setting 'criterion' is 'max': expected one of mean, min"):
        PermutationsConfig(output="p.npy", criterion="max")
    with pytest.raises(UserError, match="setting 'min_side' is 0: must be positive"):
        PrepareConfig(source="s", output="o.h5", min_side=0)
    with pytest.raises(UserError, match="setting 'phase' is 'all'"):
        FinetuneConfig(dataset="fashion-mnist", model="mlp", out="o", phase="all")


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


@pytest.mark.parametrize("module", ["tools.run.errors", "tools", "tools.run", "tools.caffe", "tools.run.folder",
                                    "tools.run.images", "jigsaw", "jigsaw.cli", "transfer.cli", "tools.caffe.cli"])
def test_light_imports_do_not_load_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def _imports(rel):
    """The modules `rel` imports, relative ones resolved against its package."""
    import ast
    package = os.path.dirname(rel).replace(os.sep, ".")
    out = set()
    for node in ast.walk(ast.parse(_read(rel))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            name = ".".join(base + ([node.module] if node.module else []))
            out.update([name] + [f"{name}.{a.name}" for a in node.names])
    return out


def test_the_floors_import_only_downwards():
    """tools.run knows no Caffe; tools knows no jigsaw or transfer; jigsaw knows no transfer but at its one
    composition point (the `jigsaw train` command line builds transfer's monitor for --monitor)."""
    above = {"tools/run": ("tools.caffe", "tools.nets", "jigsaw", "transfer"),
             "tools/nets": ("tools.caffe", "jigsaw", "transfer"), "tools": ("jigsaw", "transfer"),
             "jigsaw": ("transfer",)}
    for floor, forbidden in above.items():
        sources = _sources(floor)
        assert sources, floor
        for rel in sources:
            bad = sorted(m for m in _imports(rel) if m.split(".")[0] in forbidden or m.startswith(forbidden))
            if rel == "jigsaw/cli.py":
                assert bad == ["transfer.monitor", "transfer.monitor.from_config"], bad
            else:
                assert not bad, (rel, bad)


def test_the_public_names_stay_where_users_import_them():
    from tools import (CaffeError, CaffeNet, LoadReport, UserError, load_caffe_net, read_caffemodel,  # noqa: F401
                       read_net, read_solver, save_caffe_net, write_caffemodel, write_prototxt)
    assert callable(load_caffe_net) and issubclass(CaffeError, UserError)


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
    # behaviour_check.py compares every .pt of two runs tensor by tensor, whatever they hold: it reads no key
    paths.remove(os.path.join(ROOT, "benchmarks", "behaviour_check.py"))
    for path in paths:
        text = open(path).read()
        assert not re.search(r"load_checkpoint\(|torch\.load\(", text), path  # a checkpoint's keys need it loaded


def test_files_are_replaced_only_through_tools_atomic():
    """One way to write a file as a unit: no module but tools/run/atomic.py renames a temporary file into place
    (jigsaw prepare's resumable .partial store, a download's resumable .part, the probe's float16 memmaps,
    ssl_probe's folders of PNGs, behaviour_check's two run folders, the proto generator and export's traced file
    aside, each renamed once by design)."""
    import re
    allowed = {"tools/run/atomic.py", "jigsaw/store.py", "transfer/features.py", "tools/caffe/protogen.py",
               "tools/caffe/export.py", "benchmarks/ssl_probe.py", "transfer/downloads.py",
               "benchmarks/behaviour_check.py"}
    sources = _sources()
    assert "tools/caffe/layers/output.py" in sources and len(sources) > 80
    for rel in sources:
        if rel not in allowed:
            assert not re.search(r"os\.(replace|rename)\(|def atomic_", _read(rel)), rel


def test_user_images_are_opened_only_through_tools_run_images():
    """One reader with the project's checks (regular file, MAX_PIXELS, bombs); the throughput benchmark's
    baseline imitates the existing ports' bare loader on purpose."""
    import re
    hits = [rel for rel in _sources() if re.search(r"Image\.open\(", _read(rel))]
    assert hits == ["benchmarks/pretrain_throughput.py", "tools/run/images.py"], hits
    assert [rel for rel in _sources() if re.search(r"^MAX_PIXELS\s*=", _read(rel), re.M)] == ["tools/run/images.py"]


def test_a_run_folders_lock_and_records_are_handled_only_by_run_folder():
    import re
    for pattern, owners in ((r"\bfcntl\b", ["tools/run/folder.py"]), (r"resume_\{", ["tools/run/folder.py"]),
                            (r"\bread_record\(", ["tools/run/folder.py", "tools/run/runrecord.py"]),
                            (r"\bwants_resume\(", ["tools/run/folder.py", "tools/run/runrecord.py"])):
        hits = [rel for rel in _sources() if re.search(pattern, _read(rel))]
        assert hits == owners, (pattern, hits)


def test_random_streams_are_made_only_in_tools_run_runtime():
    """Every generator and seed of the library comes from runtime's named streams (benchmarks, which time
    other ports' ways, aside)."""
    import re
    pattern = r"default_rng\(|torch\.Generator\(|manual_seed\(|np\.random\.|SeedSequence|^import random"
    hits = [rel for rel in _sources("tools", "jigsaw", "transfer") + ["demo.py"]
            if re.search(pattern, _read(rel), re.M)]
    assert hits == ["tools/run/runtime.py"], hits


def test_the_smallest_image_side_is_written_once():
    import glob
    import re
    hits = [(os.path.relpath(p, ROOT), m) for p in glob.glob(os.path.join(ROOT, "jigsaw", "*.py"))
            for m in re.findall(r"min_side\s*=\s*\d+|MIN_SIDE\s*=\s*\d+|--min-side.*default=\d+", open(p).read())]
    assert hits == [("jigsaw/config.py", "MIN_SIDE = 64")], hits


@pytest.mark.parametrize("module", ["jigsaw.cfn", "jigsaw.recipes"])
def test_importing_the_cfn_loads_no_option_parser_run_record_or_layer_registry(module):
    """The model and the recipes are a library: no command-line config, run record or Caffe layer registry."""
    code = (f"import sys, {module}; print(sorted(m for m in sys.modules if m in ('tools.run.options', "
            "'tools.run.runrecord', 'tools.run.folder', 'tools.caffe.layers', 'tools.run.cli_runner', "
            "'jigsaw.config', 'tools.caffe.prototxt', 'tools.caffe.caffemodel')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


# ARCHITECTURE.md's "who owns what": each fact, a pattern that finds where it is written, and the one place
# (or the named places) allowed to write it. A second place makes the row fail.
OWNERS = {
    "pool-lrn": (r"^def (caffe_pool2d|caffe_pool_size|lrn_across)\b", ["tools/caffe/ops.py"], ()),
    "torch-files": (r"torch\.(load|save)\(", ["tools/run/checkpoint.py"], ()),
    "device": (r"cuda\.is_available\(\)", ["tools/run/runtime.py"], ("tools", "jigsaw", "transfer")),
    "worker-lifetime": (r"PR_SET_PDEATHSIG", ["tools/run/runtime.py"], ()),
    "error-types": (r"^class \w+\((UserError|CaffeError|DatasetError|DiskError)\)", ["tools/run/errors.py"], ()),
    "exit-2": (r"exit\(2\)|return 2\b", ["tools/run/cli_runner.py"], ()),
    "image-extensions": (r'"\.jpeg"', ["tools/run/images.py"], ()),
    "safe-paths": (r"S_ISREG|^def inside\b", ["tools/run/paths.py"], ()),
    "hdf5-guards": (r"getlink=True|is_virtual", ["tools/run/hdf5.py"], ()),
    "lazy-names": (r"importlib\.import_module\(", ["tools/run/lazy.py"], ()),
    "csv-tables": (r"csv\.DictWriter\(|csv\.writer\(", ["jigsaw/logs.py", "transfer/probe_tables.py"],
                   ("tools", "jigsaw", "transfer")),
    "caffemodel-wire": (r"def _encode_varint|def _parse_blob", ["tools/caffe/caffemodel.py"], ()),
    "caffe-objective": (r"^def (place_loss_weights|split_counts|loss_weights_of)\b", ["tools/caffe/objective.py"], ()),
    "caffe-solvers": (r"^def learning_rate\b|^class CaffeSolver\b", ["tools/caffe/solver.py"], ()),
    "caffe-fillers": (r"^def fill\b", ["tools/caffe/fillers.py"], ()),
    "caffe-preprocess": (r"^def read_blobproto\b|^class Transform\b", ["tools/caffe/preprocess.py"], ()),
    "layer-by-layer": (r"def steps\b", ["tools/caffe/net.py"], ()),
    "export": (r"torch\.export\.export|torch\.onnx\.export", ["tools/caffe/export.py"], ()),
    "opencv-check": (r"readNetFromCaffe", ["tools/caffe/verify.py"], ()),
    "fixed-on-resume": (r"^FIXED_ON_RESUME\s*=", ["jigsaw/config.py", "transfer/config.py"], ()),
    "recipes": (r"^class PuzzleConfig\b|^DEFAULT\s*=", ["jigsaw/recipes.py"], ()),
    "catalog": (r"^def list_text\b", ["transfer/catalog.py"], ()),
    "twins": (r"^def make_twin\b", ["transfer/twins.py"], ()),
    "knn-vote": (r"^def (vote|knn_accuracy)\b", ["transfer/knn.py"], ()),
    "labelled-draws": (r"^def (draw_labelled|fit_linear)\b", ["transfer/lowshot.py"], ()),
    "probe-tables": (r"^def (pair|layer_rows)\b", ["transfer/probe_tables.py"], ()),
    "voc07-ap": (r"^def (mean_ap|average_precision)\b", ["transfer/voc07.py"], ()),
    "monitor": (r"^class \w*Monitor\b", ["transfer/monitor.py"], ()),
    "option-parser": (r"argparse\.ArgumentParser\(", [], ("tools", "jigsaw", "transfer")),
    "did-you-mean": (r"get_close_matches", ["tools/run/errors.py"], ()),
    "settings-files": (r"^MAX_SETTINGS_BYTES\s*=|yaml\.safe_load\(", ["tools/run/settings.py"], ()),
    "stop-signals": (r"\(signal\.SIGINT, signal\.SIGTERM\)", ["tools/run/signals.py"], ()),
    "caffemodel-recipe": (r"^def (recipe_in|train_val_beside|caffemodel_recipe)\b",
                          ["jigsaw/caffe_recipe.py", "jigsaw/checkpoint.py"], ()),
    # what a decoding library raises on a damaged file is named in one place, and caught through its guard
    "decoders": (r"except\s*\(?[\w., ]*\b(zlib\.error|UnpicklingError|BadZipFile|DecodeError|YAMLError|TokenError|"
                 r"lmdb\.Error|JSONDecodeError|UnicodeDecodeError)\b|\bzlib\.error\b|\bTokenError\b",
                 ["tools/run/decoding.py"], ("tools", "jigsaw", "transfer")),
    "lmdb-pages": (r"^MAGIC, VERSION = 0xBEEFC0DE|import lmdb\b", ["jigsaw/lmdb_pages.py"], ("tools", "jigsaw", "transfer")),
    "downloads": (r"\burllib\b|\burlopen\b|\bhttp\.client\b|^FASHION_MNIST_(URL|DEBIAN) =", ["transfer/downloads.py"],
                  ("tools", "jigsaw", "transfer", "prototxt")),
}


@pytest.mark.parametrize("row", sorted(OWNERS))
def test_each_fact_has_its_one_place(row):
    import re
    pattern, owners, packages = OWNERS[row]
    hits = [rel for rel in _sources(*packages) if re.search(pattern, _read(rel), re.M)]
    assert hits == owners, hits


def test_architecture_md_names_a_check_for_every_row_of_its_ownership_table():
    """Each row of "Who owns what" ends in the check that holds it: an OWNERS row or a test function."""
    import glob
    import re
    text = _read("ARCHITECTURE.md")
    table = text[text.index("## Who owns what"):].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| fact")]
    assert len(rows) >= 30, len(rows)
    tests = "".join(open(p).read() for p in glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True))
    named = set()
    for line in rows:
        check = re.findall(r"`([\w-]+)`", line.rstrip(" |").rsplit("|", 1)[-1])
        assert check, line
        for name in check:
            assert name in OWNERS or f"def {name}(" in tests, (name, line)
            named.add(name)
    assert set(OWNERS) <= named  # and no check goes unexplained in the table
