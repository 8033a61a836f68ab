"""Fine-tuning end to end: summary.json, both phases from a jigsaw checkpoint, resume, the CLI, and a
short run on the real Fashion-MNIST (Debian's dataset-fashion-mnist; .ci/run installs it)."""
import json
import os

import pytest
import torch

from tools.run.errors import UserError
from transfer.cli import main
from transfer.datasets import FASHION_MNIST_DEBIAN
from transfer.finetune import FinetuneConfig, finetune

from .test_datasets import mnist_like

ADAM = 'type: "Adam" base_lr: 0.001 momentum: 0.9 lr_policy: "fixed"'


def test_cfn_branch_both_phases_with_early_stopping(tmp_path, jigsaw_ckpt):
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    cfg = FinetuneConfig(dataset="fashion-mnist", data_root=root, model="cfn", weights=jigsaw_ckpt,
                         out=str(tmp_path / "run"), phase="both", epochs=6, batch_size=16,
                         head_patience=1, finetune_patience=1, eps=10.0,  # nothing improves by 10: fires
                         head_solver=ADAM, finetune_solver=ADAM, progress=False)
    summary, model = finetune(cfg)
    assert summary["phases"]["head"]["early_stopped"] and summary["phases"]["finetune"]["early_stopped"]
    assert summary["phases"]["head"]["epochs_run"] == 2 and summary["epochs_run"] == 4
    with open(tmp_path / "run" / "summary.json") as f:
        on_disk = json.load(f)
    for key in ("test_accuracy", "epochs_run", "best_val_loss", "per_class_accuracy", "confusion_matrix"):
        assert key in on_disk
    assert 0 <= on_disk["test_accuracy"] <= 1 and len(on_disk["confusion_matrix"]) == 10
    assert not (tmp_path / "run" / "lr.png").exists()  # a fixed rate: no flat panel
    for name in ("curves.png", "filters.png", "history.csv", "lr.csv", "model.pt", "checkpoint.pt", "config.json"):
        assert (tmp_path / "run" / name).exists(), name
    hist = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert hist[1].startswith("head,") and hist[-1].startswith("finetune,")
    jigsaw_conv1 = torch.load(jigsaw_ckpt, weights_only=True)["model"]["conv1.weight"]
    assert not torch.equal(model.backbone.body.conv1.weight.detach(), jigsaw_conv1)  # fine-tuned


def test_head_phase_leaves_the_cfn_branch_untouched(tmp_path, jigsaw_ckpt):
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    summary, model = finetune(FinetuneConfig(dataset="fashion-mnist", data_root=root, model="cfn",
                                             weights=jigsaw_ckpt, out=str(tmp_path / "run"), phase="head",
                                             epochs=2, batch_size=16, head_solver=ADAM, progress=False))
    jigsaw = torch.load(jigsaw_ckpt, weights_only=True)["model"]
    for name in ("conv1", "conv3", "conv5"):
        assert torch.equal(getattr(model.backbone.body, name).weight.detach(), jigsaw[f"{name}.weight"])
    assert summary["phases"]["head"]["epochs_run"] == 2


def test_resume_continues_the_phase(tmp_path):
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    base = dict(dataset="fashion-mnist", data_root=root, model="mlp", phase="finetune", batch_size=16,
                finetune_patience=100, finetune_solver=ADAM, progress=False, out=str(tmp_path / "r"))
    full, _ = finetune(FinetuneConfig(**base, epochs=4))
    finetune(FinetuneConfig(**dict(base, out=str(tmp_path / "r2")), epochs=2))
    resumed, _ = finetune(FinetuneConfig(**dict(base, out=str(tmp_path / "r2")), epochs=4, resume=True))
    assert resumed["epochs_run"] == 4
    assert abs(resumed["best_val_loss"] - full["best_val_loss"]) < 1e-5


def test_cli_finetune_and_errors(tmp_path, capsys):
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    code = main(["finetune", "--dataset", "fashion-mnist", "--data-root", root, "--model", "mlp",
                 "--phase", "finetune", "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "c"),
                 "--no-progress"])
    assert code == 0 and '"test_accuracy"' in capsys.readouterr().out
    assert main(["finetune", "--dataset", "nope", "--model", "mlp", "--out", str(tmp_path / "x")]) == 2
    assert main(["finetune", "--dataset", "fashion-mnist", "--data-root", str(tmp_path / "missing"),
                 "--model", "mlp", "--out", str(tmp_path / "y")]) == 2
    assert main(["finetune", "--dataset", "fashion-mnist", "--data-root", root, "--model", "resnet50",
                 "--out", str(tmp_path / "z")]) == 2  # no weights: a clear message, not a download
    err = capsys.readouterr().err
    assert "unknown dataset 'nope'" in err and "needs --weights" in err and "Traceback" not in err
    assert main(["list"]) == 0


@pytest.mark.skipif(not os.path.isdir(FASHION_MNIST_DEBIAN), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_short_run(tmp_path):
    summary, _ = finetune(FinetuneConfig(dataset="fashion-mnist", model="fmnist-cnn", phase="finetune",
                                         out=str(tmp_path / "fm"), limit_train=3000, epochs=2, batch_size=64,
                                         finetune_solver=ADAM, progress=False))
    assert summary["n_test"] == 10000 and summary["test_accuracy"] > 0.75


def test_plot_commands_on_a_finished_run(tmp_path, capsys):
    from PIL import Image
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    run = tmp_path / "run"
    assert main(["finetune", "--dataset", "fashion-mnist", "--data-root", root, "--model", "fmnist-cnn",
                 "--phase", "finetune", "--epochs", "1", "--batch-size", "8", "--out", str(run),
                 "--no-progress"]) == 0
    assert (run / "filters.png").stat().st_size > 2000
    Image.new("L", (28, 28), 128).save(tmp_path / "x.png")
    assert main(["plot", "activations", "--run", str(run), "--layer", "head.0", "--indices", "0", "3"]) == 0
    assert main(["plot", "featuremaps", "--run", str(run), "--layer", "backbone.body.0",
                 "--image", str(tmp_path / "x.png")]) == 0
    assert main(["plot", "curves", "--run", str(run)]) == 0
    assert main(["plot", "activations", "--run", str(run), "--layer", "nope"]) == 2
    (tmp_path / "notes.png").write_text("not an image")
    assert main(["plot", "featuremaps", "--run", str(run), "--layer", "backbone.body.0",
                 "--image", str(tmp_path / "notes.png")]) == 2
    assert (run / "activations-head.0.png").stat().st_size > 2000
    assert (run / "featuremaps-backbone.body.0.png").stat().st_size > 2000
    assert "no layer 'nope'" in capsys.readouterr().err


def test_two_stage_recipe_starts_stage_two_from_stage_one(tmp_path, monkeypatch, capsys):
    from transfer import recipes
    emnist = mnist_like(str(tmp_path / "data"), prefix="emnist-letters-", stems=("train", "test"),
                        n=(60, 20), label_offset=1)
    mnist_like(str(tmp_path / "data"), n=(60, 20))  # MNIST files in the same folder
    recipe = dict(recipes.RECIPES["emnist-to-mnist"])
    recipe["then"] = dict(recipe["then"], limit_train=30, head_epochs=2)
    monkeypatch.setitem(recipes.RECIPES, "emnist-to-mnist", recipe)
    assert main(["run", "emnist-to-mnist", "--data-root", emnist, "--epochs", "2", "--batch-size", "16",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    s1 = torch.load(tmp_path / "run" / "stage1" / "model.pt", weights_only=True)["model"]
    s2 = torch.load(tmp_path / "run" / "stage2" / "model.pt", weights_only=True)["model"]
    conv = "backbone.body.0.weight"
    assert torch.equal(s1[conv], s2[conv])  # stage 2 froze the EMNIST-trained convolutions
    assert s1["head.0.weight"].shape[0] == 26 and s2["head.0.weight"].shape[0] == 10
    with open(tmp_path / "run" / "stage2" / "summary.json") as f:
        assert json.load(f)["n_train"] == 30


def test_semi_supervised_finetune_trains_on_the_labelled_draw_only(tmp_path, monkeypatch):
    import numpy as np

    from tools.run.errors import UserError
    from transfer import finetune as finetune_mod
    from transfer.datasets import load_dataset
    from transfer.lowshot import draw_labelled
    root = mnist_like(str(tmp_path / "fm"), n=(200, 20))
    seen = {}
    loaders = finetune_mod.loaders

    def spy(splits, *a, **k):
        seen.update(splits)
        return loaders(splits, *a, **k)
    monkeypatch.setattr(finetune_mod, "loaders", spy)
    cfg = FinetuneConfig(dataset="fashion-mnist", data_root=root, model="mlp", out=str(tmp_path / "run"),
                         phase="finetune", epochs=1, batch_size=16, labels_per_class="3", label_draw=1,
                         finetune_solver=ADAM, progress=False)
    summary, _ = finetune(cfg)
    full = load_dataset("fashion-mnist", root, cfg.val_fraction, cfg.seed)
    want = full["train"].subset(draw_labelled(full["train"].labels, 3, 1, cfg.seed))
    assert summary["n_train"] == 30 and summary["labels_per_class"] == "3" and summary["label_draw"] == 1
    assert np.array_equal(seen["train"].images, want.images) and np.array_equal(seen["train"].labels, want.labels)
    assert len(seen["val"]) == len(full["val"])  # validation is the split it was, disjoint from the draw
    with pytest.raises(UserError, match="label budget"):
        finetune(FinetuneConfig(dataset="fashion-mnist", data_root=root, model="mlp", out=str(tmp_path / "bad"),
                                labels_per_class="2.5"))
    assert not (tmp_path / "bad").exists()


def test_twin_runs_start_from_fresh_weights_and_compare_sets_them_against_the_pretrained(tmp_path, jigsaw_ckpt,
                                                                                        capsys):
    from transfer.compare import compare
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    common = dict(dataset="fashion-mnist", data_root=root, model="cfn", weights=jigsaw_ckpt, phase="head", epochs=1,
                  batch_size=16, labels_per_class="2", head_solver=ADAM, progress=False)
    finetune(FinetuneConfig(out=str(tmp_path / "pre"), **common))
    models = [finetune(FinetuneConfig(out=str(tmp_path / f"twin{s}"), twin_seed=s, **common))[1] for s in (5, 6)]
    pretrained = torch.load(jigsaw_ckpt, weights_only=True)["model"]["conv1.weight"]
    a, b = (m.backbone.body.conv1.weight.detach() for m in models)
    assert a.shape == b.shape == pretrained.shape and not torch.equal(a, b) and not torch.equal(a, pretrained)
    runs = [str(tmp_path / n) for n in ("pre", "twin5", "twin6")]
    (row,) = compare(runs)
    assert row["pretrained_n"] == 1 and row["n"] == 2 and row["labels_per_class"] == "2"
    assert main(["compare", *runs]) == 0 and "± " in capsys.readouterr().out
    assert main(["compare", *runs[:2]]) == 2  # one twin: no standard error; one line
    assert "need at least 1 and 2" in capsys.readouterr().err


def test_freeze_through_keeps_the_lower_blocks_and_retrains_the_rest_from_a_fresh_init(tmp_path, jigsaw_ckpt):
    from transfer.backbones import build_backbone
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    still = 'type: "SGD" base_lr: 0.0 momentum: 0.9 lr_policy: "fixed"'  # nothing moves: the start is seen
    cfg = FinetuneConfig(dataset="fashion-mnist", data_root=root, model="cfn", weights=jigsaw_ckpt, phase="finetune",
                         freeze_through="conv3", epochs=1, batch_size=16, finetune_solver=still, progress=False,
                         out=str(tmp_path / "run"))
    _, model = finetune(cfg)
    pretrained = build_backbone("cfn", jigsaw_ckpt)
    blocks = list(pretrained.blocks)
    assert [n for n, p in model.backbone.named_parameters() if p.requires_grad]  # the later blocks train
    for name in blocks:
        before, after = pretrained.block(name).weight, model.backbone.block(name).weight.detach().cpu()
        trains = model.backbone.block(name).weight.requires_grad
        if blocks.index(name) <= blocks.index("conv3"):
            assert torch.equal(before, after) and not trains, name  # kept and frozen
        else:  # a fresh He init, not the pretrained weights
            assert trains and not torch.equal(before, after) and after.abs().max() > 0, name
    with pytest.raises(UserError, match="not a block"):
        finetune(FinetuneConfig(dataset="fashion-mnist", data_root=root, model="cfn", weights=jigsaw_ckpt,
                                freeze_through="conv9", out=str(tmp_path / "bad"), progress=False))
    assert not (tmp_path / "bad").exists()  # refused after --out was made: no folder is left to block a rerun


def test_voc2007_fine_tunes_a_sigmoid_head_and_reports_map(tmp_path, jigsaw_ckpt):
    from transfer.voc07 import CLASSES

    from .test_voc07 import voc_like
    root, _ = voc_like(str(tmp_path / "VOCdevkit"), n=(24, 8))
    cfg = FinetuneConfig(dataset="voc2007", data_root=root, model="cfn", weights=jigsaw_ckpt, phase="both",
                         epochs=1, batch_size=8, head_solver=ADAM, finetune_solver=ADAM, input_size=64,
                         progress=False, out=str(tmp_path / "run"))
    summary, model = finetune(cfg)
    assert summary["metric"].startswith("mAP") and list(summary["per_class_ap"]) == list(CLASSES)
    assert 0 <= summary["test_accuracy"] <= 1 and "confusion_matrix" not in summary
    assert model.head[-1].out_features == 20 and summary["epochs_run"] == 2
    with pytest.raises(UserError, match="multi-label"):
        finetune(FinetuneConfig(dataset="voc2007", data_root=root, model="cfn", weights=jigsaw_ckpt,
                                labels_per_class="2", out=str(tmp_path / "bad"), progress=False))


def test_the_multilabel_loss_leaves_difficult_labels_out():
    from transfer.passes import task_loss as _loss
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    with_difficult = _loss(logits, torch.tensor([[1, -1, 0]]))
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :2], torch.tensor([[1.0, 0.0]]),
                                                               reduction="sum")
    assert with_difficult == pytest.approx(float(want))
    assert _loss(torch.tensor([[2.0, -1.0]]), torch.tensor([1])) == pytest.approx(3.0486, abs=1e-4)  # classes: CE


@pytest.mark.parametrize("precision,bf16", [("auto", False), ("bf16", True), ("fp32", False)])
def test_precision_is_an_option_used_by_training_evaluation_and_probe_features(tmp_path, monkeypatch, precision,
                                                                               bf16):
    """--precision as jigsaw train's: auto is bf16 autocast (and channels_last) on CUDA, fp32 elsewhere (here, a
    CPU: auto is fp32); it is recorded; training, validation, test and the probe's features all follow it."""
    import transfer.passes as passes
    from tools.run import runtime
    from transfer.probe import ProbeConfig, probe
    seen = []
    real = runtime.autocast

    def spy(device, enabled):
        seen.append(enabled)
        return real(device, enabled)
    monkeypatch.setattr(passes, "autocast", spy)
    monkeypatch.setattr(runtime, "autocast", spy)  # the probe's feature extraction imports it from here
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    finetune(FinetuneConfig(dataset="fashion-mnist", data_root=root, model="mlp", phase="finetune", epochs=1,
                            batch_size=16, out=str(tmp_path / "r"), progress=False, precision=precision))
    assert len(seen) > 3 and set(seen) == {bf16}
    with open(tmp_path / "r" / "config.json") as f:
        assert json.load(f)["precision"] == precision
    seen.clear()
    probe(ProbeConfig(dataset="fashion-mnist", data_root=root, model="mlp", weights="none", protocols=("knn",),
                      random_seeds=2, out=str(tmp_path / "p"), progress=False, precision=precision))
    assert seen and set(seen) == {bf16}
