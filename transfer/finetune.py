"""Fine-tuning in the seeds' two phases: `head` (backbone frozen) then `finetune` (all, or named
blocks, unfrozen) from the head phase's best weights; Caffe solvers; early stopping; resumable."""
import csv
import json
import os
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tools.atomic import atomic_open, ensure_dir
from tools.checkpoint import load_checkpoint, save_checkpoint
from tools.errors import UserError
from tools.prototxt import read_solver
from tools.runtime import autocast, resolve_device, use_bf16
from tools.solver import CaffeSolver

from .backbones import build_backbone, first_conv
from .config import FinetuneConfig
from .data import augmentation, loaders
from .datasets import load_dataset
from .early_stopping import EarlyStopping
from .model import TransferModel, make_head

def _phases(cfg, scratch):
    if cfg.phase not in ("head", "finetune", "both"):
        raise UserError(f"phase must be head, finetune or both, got '{cfg.phase}'")
    if scratch and cfg.phase == "both":
        return ["finetune"]  # the seeds' own nets are trained whole, from scratch
    return ["head", "finetune"] if cfg.phase == "both" else [cfg.phase]


def _configure(model, phase, cfg):
    if phase == "head":
        model.freeze_backbone()
    elif cfg.unfreeze:
        model.freeze_backbone(except_blocks=tuple(cfg.unfreeze))
    else:
        model.unfreeze_all()
    sp = read_solver(cfg.head_solver if phase == "head" else cfg.finetune_solver)
    params = [p for p in model.parameters() if p.requires_grad]
    return CaffeSolver([dict(params=params)], sp)


@torch.no_grad()
def evaluate(model, loader, device, n_classes):
    model.eval()
    loss, confusion = 0.0, torch.zeros(n_classes, n_classes, dtype=torch.long)
    for x, y in loader:
        with autocast(device, use_bf16("auto", device)):
            logits = model(_to(x, device)).float()
        loss += float(F.cross_entropy(logits, y.to(device), reduction="sum"))
        pred = logits.argmax(1).cpu()
        confusion.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    n = int(confusion.sum())
    return dict(loss=loss / max(n, 1), accuracy=float(confusion.trace()) / max(n, 1), confusion=confusion)



def _to(x, device):
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" and x.dim() == 4 else x


def _epoch(model, solver, loader, device, bar):
    model.train()
    total, hits, n, lrs = 0.0, 0, 0, []
    for x, y in loader:
        x, y = _to(x, device), y.to(device)
        with autocast(device, use_bf16("auto", device)):
            logits = model(x).float()
        loss = F.cross_entropy(logits, y)
        lrs.append(solver.lr)
        loss.backward()
        solver.step()
        solver.zero_grad(set_to_none=True)
        total += loss.item() * len(y)
        hits += int((logits.argmax(1) == y).sum())
        n += len(y)
        bar.update(1)
    return total / n, hits / n, lrs


def finetune(cfg: FinetuneConfig):
    """Run the configured phases; writes history.csv, lr.csv, summary.json and plots into cfg.out."""
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    backbone = build_backbone(cfg.model, cfg.weights)
    size = cfg.input_size or backbone.input_size
    splits = load_dataset(cfg.dataset, cfg.data_root, cfg.val_fraction, cfg.seed, cfg.limit_train)
    classes = splits["train"].classes
    model = TransferModel(backbone, make_head(cfg.head, backbone.feature_dim, len(classes), cfg.seed)).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ensure_dir(cfg.out)
    stats_path = os.path.join(cfg.out, "stats.pt")
    stats = tuple(load_checkpoint(stats_path, "the run's input statistics")) \
        if cfg.resume and os.path.exists(stats_path) else None
    if cfg.input_norm not in ("backbone", "dataset"):
        raise UserError(f"input_norm must be 'backbone' or 'dataset', got '{cfg.input_norm}'")
    preprocess = getattr(backbone, "preprocess", None) if cfg.input_norm == "backbone" else None
    data, stats = loaders(splits, size, backbone.in_channels, cfg.batch_size, cfg.workers,
                          augmentation(**cfg.augment), cfg.seed, stats, preprocess)
    save_checkpoint(stats_path, list(stats))
    with atomic_open(os.path.join(cfg.out, "config.json"), "w") as f:
        json.dump(dict(asdict(cfg), classes=classes, input_size=size, mean=stats[0].tolist(),
                       std=stats[1].tolist(), backbone=getattr(backbone, "record", {}),
                       input=("the backbone's own" if preprocess else "standardised by the training split")),
                  f, indent=2)
    phases = _phases(cfg, backbone.scratch)
    conv1_before = first_conv(model)
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    start_phase, start_epoch, history, lr_rows, ck = 0, 0, [], [], None
    if cfg.resume:
        ck = load_checkpoint(ckpt_path)
        start_phase, start_epoch = ck["phase_index"], ck["epoch"] + 1
        history, lr_rows = ck["history"], ck["lr_rows"]
        model.load_state_dict(ck["model"])
    result = {}
    for pi in range(start_phase, len(phases)):
        phase = phases[pi]
        solver = _configure(model, phase, cfg)
        stopper = EarlyStopping(cfg.head_patience if phase == "head" else cfg.finetune_patience, cfg.eps)
        max_epochs = cfg.head_epochs if phase == "head" else cfg.finetune_epochs
        max_epochs = min(max_epochs, cfg.epochs) if cfg.epochs else max_epochs
        first = 0
        if ck is not None and pi == start_phase:
            solver.load_state_dict(ck["solver"])
            for k, v in ck["stopper"].items():
                setattr(stopper, k, v)
            stopper.best_state = ck["best_state"]
            first = start_epoch
            ck = None
        bar = tqdm(total=(max_epochs - first) * len(data["train"]), desc=phase, disable=not cfg.progress)
        try:
            for epoch in range(first, max_epochs):
                # shuffling and dropout of each epoch depend only on (seed, phase, epoch): resumable
                data["train"].generator.manual_seed(cfg.seed * 1_000_003 + pi * 10_007 + epoch)
                torch.manual_seed(cfg.seed * 1_000_003 + pi * 10_007 + epoch + 1)
                t0 = time.time()
                tr_loss, tr_acc, lrs = _epoch(model, solver, data["train"], device, bar)
                val = evaluate(model, data["val"], device, len(classes))
                history.append(dict(phase=phase, epoch=epoch, train_loss=tr_loss, train_acc=tr_acc,
                                    val_loss=val["loss"], val_acc=val["accuracy"], seconds=time.time() - t0))
                lr_rows += [dict(phase=phase, iteration=solver.iter - len(lrs) + i, lr=lr) for i, lr in enumerate(lrs)]
                _write_csv(os.path.join(cfg.out, "history.csv"), history)  # per epoch: a crash keeps it
                stop = stopper.step(epoch, val["loss"], model)
                bar.set_postfix(val_loss=f"{val['loss']:.4f}", val_acc=f"{val['accuracy']:.4f}")
                save_checkpoint(ckpt_path, dict(model=model.state_dict(), solver=solver.state_dict(),
                                                stopper=stopper.state_dict(), best_state=stopper.best_state,
                                                phase_index=pi, epoch=epoch, history=history, lr_rows=lr_rows))
                if stop:
                    break
        finally:
            bar.close()
            stopper.restore(model)  # best weights on every exit path, fired or not
        result[phase] = dict(epochs_run=sum(1 for h in history if h["phase"] == phase),
                             best_val_loss=stopper.best, early_stopped=stopper.fired)
    _write_csv(os.path.join(cfg.out, "history.csv"), history)
    _write_csv(os.path.join(cfg.out, "lr.csv"), lr_rows)
    test = evaluate(model, data["test"], device, len(classes))
    conf = test["confusion"]
    per_class = (conf.diag().double() / conf.sum(1).clamp_min(1).double()).tolist()
    summary = dict(dataset=cfg.dataset, model=cfg.model, phases=result, test_accuracy=test["accuracy"],
                   test_loss=test["loss"], epochs_run=sum(r["epochs_run"] for r in result.values()),
                   best_val_loss=min(r["best_val_loss"] for r in result.values()),
                   per_class_accuracy=dict(zip(classes, per_class)), confusion_matrix=conf.tolist(),
                   n_train=len(splits["train"]), n_val=len(splits["val"]), n_test=len(splits["test"]))
    with atomic_open(os.path.join(cfg.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    save_checkpoint(os.path.join(cfg.out, "model.pt"), dict(model=model.state_dict(), classes=classes,
                                                           model_name=cfg.model, head=cfg.head))
    from .plots import plot_filters, plot_history, plot_lr
    plot_history(cfg.out)
    plot_lr(cfg.out)
    if conv1_before is not None:
        plot_filters(os.path.join(cfg.out, "filters.png"), ("conv1 before", conv1_before),
                     ("conv1 after", first_conv(model)))
    return summary, model


def load_run(out):
    """(model, config dict) of a finished `transfer` run folder, for plots and inference."""
    with open(os.path.join(out, "config.json")) as f:
        conf = json.load(f)
    weights = conf.get("weights") or "none"
    backbone = build_backbone(conf["model"], weights)
    model = TransferModel(backbone, make_head(conf["head"], backbone.feature_dim, len(conf["classes"])))
    model.load_state_dict(load_checkpoint(os.path.join(out, "model.pt"))["model"])
    return model.eval(), conf


def _write_csv(path, rows):
    if not rows:
        return
    with atomic_open(path, "w") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def stats_of(summary):
    return {k: summary[k] for k in ("test_accuracy", "epochs_run", "best_val_loss")}


