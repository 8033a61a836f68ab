"""`transfer` runs are resumable as exactly as `jigsaw train`'s: a crash after any epoch (head phase
stopped early, or mid fine-tune) resumes to the uninterrupted run's history, summary and weights; the run
folder's record is never rewritten, a used folder is never overwritten, changed settings are one line."""
import json
import os

import pytest
import torch

import transfer.finetune as ft
from tools.run.folder import lock_folder
from transfer.cli import main
from transfer.finetune import FinetuneConfig, finetune

from .test_datasets import mnist_like
from .test_finetune import ADAM

STEP = 'type: "Adam" base_lr: 0.001 momentum: 0.9 lr_policy: "step" gamma: 0.5 stepsize: 3'


class _Killed(BaseException):
    """Stands for SIGKILL right after a checkpoint: nothing of the process's cleanup matters."""


def _config(root, out, weights, **kw):
    # head: epoch 0 improves on inf, epoch 1 cannot improve by 10 -> stops early after 2 epochs;
    # fine-tune: 3 epochs, never stopped early
    return FinetuneConfig(**dict(dict(dataset="fashion-mnist", data_root=root, model="cfn", weights=weights,
                                      out=str(out), phase="both", head_epochs=5, finetune_epochs=3,
                                      batch_size=16, head_patience=1, finetune_patience=100, eps=10.0,
                                      head_solver=ADAM, finetune_solver=STEP, progress=False), **kw))


def _history(out):
    rows = (out / "history.csv").read_text().splitlines()
    return [",".join(r.split(",")[:-1]) for r in rows]  # without the seconds column


def _summary(out):
    with open(out / "summary.json") as f:
        return json.load(f)


@pytest.mark.parametrize("crash_after", [2, 4])  # after the head phase stopped early / mid fine-tune
def test_a_crash_after_any_epoch_resumes_to_the_uninterrupted_run(tmp_path, jigsaw_ckpt, monkeypatch, crash_after):
    root = mnist_like(str(tmp_path / "fm"), n=(60, 20))
    full, cut = tmp_path / "full", tmp_path / "cut"
    finetune(_config(root, full, jigsaw_ckpt))
    real, saved = ft.save_checkpoint, []

    def save_then_die(path, obj, *a, **k):
        real(path, obj, *a, **k)
        if path.endswith("checkpoint.pt"):
            saved.append(path)
            if len(saved) == crash_after:
                raise _Killed
    monkeypatch.setattr(ft, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        finetune(_config(root, cut, jigsaw_ckpt))
    monkeypatch.setattr(ft, "save_checkpoint", real)
    assert not (cut / "summary.json").exists()
    config = (cut / "config.json").read_bytes()
    finetune(_config(root, cut, jigsaw_ckpt, resume=True))
    assert (cut / "config.json").read_bytes() == config  # the start's record is kept
    assert (cut / f"resume_{crash_after}.json").exists()
    assert _history(cut) == _history(full)  # no extra head epoch, nothing lost
    a, b = _summary(full), _summary(cut)
    assert a["phases"] == b["phases"] and a["phases"]["head"]["early_stopped"]
    assert a["phases"]["head"]["epochs_run"] == 2 and a["phases"]["finetune"]["epochs_run"] == 3
    assert a["test_accuracy"] == b["test_accuracy"] and a["confusion_matrix"] == b["confusion_matrix"]
    ma = torch.load(full / "model.pt", weights_only=True)["model"]
    mb = torch.load(cut / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_resuming_a_finished_run_rewrites_nothing(tmp_path, capsys):
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    args = ["finetune", "--dataset", "fashion-mnist", "--data-root", root, "--model", "mlp", "--phase", "finetune",
            "--epochs", "1", "--batch-size", "8", "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(args) == 0
    before = {n: (tmp_path / "r" / n).read_bytes() for n in os.listdir(tmp_path / "r") if not n.startswith(".")}
    capsys.readouterr()
    assert main(["finetune", "--out", str(tmp_path / "r"), "--resume"]) == 0  # the folder alone
    assert "finished" in capsys.readouterr().out
    after = {n: (tmp_path / "r" / n).read_bytes() for n in os.listdir(tmp_path / "r") if not n.startswith(".")}
    assert after == before


def test_a_used_folder_and_changed_settings_are_one_line_and_write_nothing(tmp_path, capsys):
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    other = mnist_like(str(tmp_path / "other"), n=(40, 10))
    out = tmp_path / "r"
    base = ["finetune", "--dataset", "fashion-mnist", "--data-root", root, "--model", "mlp", "--phase", "finetune",
            "--epochs", "2", "--batch-size", "8", "--out", str(out), "--no-progress"]
    assert main([*base[:base.index("--epochs") + 1], "1", *base[base.index("--epochs") + 2:]]) == 0
    before = {n: (out / n).read_bytes() for n in os.listdir(out) if not n.startswith(".")}
    capsys.readouterr()
    cases = [base,  # a used --out without --resume
             [*base, "--resume", "--model", "fmnist-cnn"],
             [*base, "--resume", "--head", "64,32"],
             [*base, "--resume", "--dataset", "mnist"],
             [*base, "--resume", "--batch-size", "4"],
             [*base, "--resume", "--seed", "3"]]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert {n: (out / n).read_bytes() for n in os.listdir(out) if not n.startswith(".")} == before
    # the same data moved elsewhere is fine (the path is the machine's), other classes are not
    assert main([*base, "--resume", "--data-root", other]) == 0
    assert json.loads((out / "config.json").read_text())["data_root"] == root
    assert main(["finetune", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no run to resume" in capsys.readouterr().err


def test_resume_auto_starts_or_continues(tmp_path):
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    out = tmp_path / "r"
    args = ["finetune", "--dataset", "fashion-mnist", "--data-root", root, "--model", "mlp", "--phase", "finetune",
            "--batch-size", "8", "--out", str(out), "--no-progress", "--resume", "auto"]
    assert main([*args, "--epochs", "1"]) == 0  # nothing there: starts
    assert main([*args, "--epochs", "2"]) == 0  # a run there: continues it
    assert _summary(out)["epochs_run"] == 2


def test_a_held_folder_is_one_line(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    held = lock_folder(str(out))
    try:
        assert main(["finetune", "--dataset", "fashion-mnist", "--data-root", str(tmp_path), "--model", "mlp",
                     "--out", str(out)]) == 2
        assert "another" in capsys.readouterr().err
    finally:
        held.close()


@pytest.mark.parametrize("when", ["after an epoch", "mid-epoch", "in an epoch's last batch"])
def test_ctrl_c_or_sigterm_says_where_and_the_command_that_resumes(tmp_path, monkeypatch, capsys, when):
    """`transfer` printed only "interrupted" at Ctrl-C and nothing at SIGTERM. Now the batch finishes, the stop
    says its epoch and what checkpoint.pt holds, and the command it prints resumes to the uninterrupted run. A
    signal in an epoch's last batch finishes that epoch (validated, kept) instead of throwing it away."""
    import signal
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    args = ["finetune", "--dataset", "fashion-mnist", "--data-root", root, "--model", "mlp", "--phase", "finetune",
            "--epochs", "3", "--batch-size", "8", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    calls = []
    if when == "after an epoch":
        real = ft.save_checkpoint

        def then_signal(path, obj, *a, **k):
            real(path, obj, *a, **k)
            if path.endswith("checkpoint.pt") and not calls:
                calls.append(path)
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs now: the loop sees it next
        monkeypatch.setattr(ft, "save_checkpoint", then_signal)
    else:
        import transfer.passes as passes
        real = passes.task_loss

        at = 7 if when == "mid-epoch" else 5  # 5 batches per epoch: the 2nd of epoch 2, or the last of epoch 1

        def signal_at_batch(logits, y, **kw):
            if not kw:  # training batches (validation asks for per-item losses)
                calls.append(1)
            if len(calls) == at and not kw:
                os.kill(os.getpid(), signal.SIGINT)
            return real(logits, y, **kw)
        monkeypatch.setattr(passes, "task_loss", signal_at_batch)
    out = tmp_path / "cut"
    capsys.readouterr()
    if when == "mid-epoch":  # the folder from a --config file: the resume command still names it
        (tmp_path / "c.json").write_text(json.dumps({"out": str(out)}))
        code = main([*args, "--config", str(tmp_path / "c.json")])
    else:
        code = main([*args, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    where = {"after an epoch": "SIGTERM after finetune epoch 1/3", "mid-epoch": "SIGINT in finetune epoch 2/3 (batch "
             "2 of 5)", "in an epoch's last batch": "SIGINT after finetune epoch 1/3"}[when]
    assert code == (143 if when == "after an epoch" else 130) and len(err) == 1, err
    assert err[0] == (f"transfer finetune: {where}; checkpoint.pt holds finetune epoch 1; resume with: "
                      f"transfer finetune --out {out} --resume")
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back
    assert main(["finetune", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert _history(out) == _history(tmp_path / "full")


def test_a_stop_before_any_epoch_finished_resumes_from_the_start(tmp_path, monkeypatch, capsys):
    """Nothing is kept yet: the line says so, and the command it prints still runs the whole run."""
    import signal

    import transfer.passes as passes
    root = mnist_like(str(tmp_path / "fm"), n=(40, 10))
    args = ["finetune", "--dataset", "fashion-mnist", "--data-root", root, "--model", "mlp", "--phase", "finetune",
            "--epochs", "2", "--batch-size", "8", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    real = passes.task_loss

    def signal_at_once(logits, y, **kw):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(logits, y, **kw)
    monkeypatch.setattr(passes, "task_loss", signal_at_once)
    out = tmp_path / "cut"
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 143
    err = capsys.readouterr().err
    assert "SIGTERM in finetune epoch 1/2 (batch 1 of 5); no epoch has finished yet, so nothing is kept" in err
    monkeypatch.undo()
    assert main(["finetune", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert _history(out) == _history(tmp_path / "full")
