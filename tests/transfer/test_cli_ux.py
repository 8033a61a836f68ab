"""What a `transfer` user sees: the list's tables, a recipe's settings as a --config file (JSON or YAML,
and a run's own config.json fed back), one line for a missing --data-root or an offline weight name,
TensorBoard scalars beside the CSVs, plots that leave out what says nothing."""
import csv
import json

import pytest
import yaml

from transfer.cli import main
from transfer.datasets import DATASETS, DatasetError, load_dataset

from .test_datasets import mnist_like


def test_list_has_headers_and_says_where_each_dataset_is(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for header in ("DATASET", "WHERE IT IS READ FROM", "HERE", "MODEL", "RECIPE", "REPORTED"):
        assert header in out
    # experiments named by what they are; nothing points at files the package does not ship
    for unshipped in ("seed 0", "seed report", "SEEDS.md", "shared/", "000:", "003:"):
        assert unshipped not in out, unshipped
    assert "the original report of that experiment" in out
    assert "the CNN of the blood-cell experiment" in out
    from transfer.downloads import FASHION_MNIST_DEBIAN, found_folder
    fashion = next(line for line in out.splitlines() if line.startswith("fashion-mnist "))
    here = f"yes: {found_folder()[0]}" if found_folder() else "no (make demo downloads it; or apt-get install " \
        "dataset-fashion-mnist)"
    assert FASHION_MNIST_DEBIAN in fashion and fashion.rstrip().endswith(here), fashion
    assert next(line for line in out.splitlines() if line.startswith("cub200 ")).rstrip().endswith("give --data-root")


@pytest.mark.parametrize("name", sorted(set(DATASETS) - {"fashion-mnist"}))
def test_a_missing_data_root_is_one_line_naming_the_layout(name):
    with pytest.raises(DatasetError, match=f"{name}: --data-root is required"):
        load_dataset(name, None)


@pytest.mark.needs_torchvision
def test_an_offline_weight_name_is_one_line_pointing_to_a_local_file(monkeypatch):
    import urllib.error

    import torchvision

    from tools.run.errors import UserError
    from transfer.backbones import build_backbone

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")
    monkeypatch.setattr(torchvision.models.ResNet50_Weights.IMAGENET1K_V1, "get_state_dict", offline)
    with pytest.raises(UserError, match="could not download.*local .pth"):
        build_backbone("resnet50", "IMAGENET1K_V1")
    with pytest.raises(UserError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        build_backbone("resnet50", "NO_SUCH_WEIGHTS")


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_recipe_shown_is_a_config_file_and_a_run_record_feeds_back(tmp_path, capsys, suffix):
    assert main(["show", "fashion-mnist-mlp"]) == 0
    settings = json.loads(capsys.readouterr().out)
    assert settings["batch_size"] == 1000 and settings["model"] == "mlp"
    path = tmp_path / f"recipe{suffix}"
    path.write_text(json.dumps(settings) if suffix == ".json" else yaml.safe_dump(settings))
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    args = ["finetune", "--config", str(path), "--data-root", root, "--epochs", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    record = json.loads((tmp_path / "a" / "config.json").read_text())
    assert record["batch_size"] == 1000 and record["finetune_solver"] == settings["finetune_solver"]
    # the run's own record, fed back, gives the same run in another folder
    assert main(["finetune", "--config", str(tmp_path / "a" / "config.json"), "--out", str(tmp_path / "b"),
                 "--no-progress"]) == 0
    again = json.loads((tmp_path / "b" / "config.json").read_text())
    assert {k: v for k, v in again.items() if k != "out"} == {k: v for k, v in record.items() if k != "out"}
    (tmp_path / "bad.json").write_text('{"batch_sise": 3}')
    capsys.readouterr()
    assert main(["finetune", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "c")]) == 2
    assert "unknown setting(s) batch_sise" in capsys.readouterr().err


def test_tensorboard_scalars_beside_the_csvs_and_no_flat_lr_plot(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    out = tmp_path / "r"
    assert main(["finetune", "--dataset", "fashion-mnist", "--data-root", root, "--model", "mlp", "--phase",
                 "finetune", "--epochs", "2", "--batch-size", "8", "--out", str(out), "--no-progress",
                 "--tensorboard", "--finetune-solver", 'type: "Adam" base_lr: 0.001 lr_policy: "fixed"']) == 0
    said = capsys.readouterr().out
    assert said.count("finetune epoch ") == 2 and "parameters" in said  # a header and a line per epoch
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [1, 2]
    with open(out / "history.csv") as f:
        assert [round(float(r["val_loss"]), 5) for r in csv.DictReader(f)] == \
            [round(e.value, 5) for e in events.Scalars("val/loss")]
    assert not (out / "lr.png").exists() and (out / "curves.png").exists()  # a fixed rate: no flat panel


def test_solver_options_override_every_phase_and_are_recorded():
    from transfer.config import RUN_FIELDS, RUN_OPTIONS, FinetuneConfig
    from transfer.finetune import _solver
    cfg = FinetuneConfig(dataset="mnist", model="mlp", out="o", base_lr=0.1, weight_decay=0.0, momentum=0.5)
    for flag in ("head_solver", "finetune_solver"):
        sp = _solver(getattr(cfg, flag), flag, cfg)
        assert (round(sp.base_lr, 6), sp.weight_decay, sp.momentum) == (0.1, 0.0, 0.5)
    plain = _solver(cfg.finetune_solver, "finetune_solver", FinetuneConfig(dataset="mnist", model="mlp", out="o"))
    assert round(plain.base_lr, 6) == 0.0005  # the solver's own without the options
    assert {"base_lr", "weight_decay", "momentum"} <= set(RUN_FIELDS) & set(RUN_OPTIONS)
    assert _solver("cfn_solver_short", "finetune_solver", cfg).type == "Adam"  # a shipped solver by name


def test_a_torchvision_built_for_another_torch_is_one_line(monkeypatch):
    """A CUDA torchvision beside a CPU torch fails to import with 'operator torchvision::nms does not exist':
    the models that need it say so in one line, with the command that installs a matching pair."""
    import builtins

    from tools.run.errors import UserError
    from transfer.backbones import build_backbone
    real = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(UserError, match=r"^torchvision \S+ does not load beside torch \S+ \(operator torchvision::nms "
                                        r"does not exist\): it was built for another torch .*--index-url") as e:
        build_backbone("resnet50", weights="none")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="needs --weights"):  # a user's own mistake is still said first
        build_backbone("resnet50", weights=None)
