"""Fine-tuning in two phases, as the reproduced experiments did: `head` (backbone frozen) then `finetune` (all, or named
blocks, unfrozen) from the head phase's best weights; Caffe solvers; early stopping; resumable."""
import json
import os
import time
from dataclasses import asdict

import torch
from tqdm import tqdm

from tools.run.atomic import atomic_open
from tools.run.checkpoint import load_checkpoint, save_checkpoint
from tools.run.errors import UserError
from tools.run.folder import RunFolder
from tools.caffe.prototxt import read_solver
from tools.run.runrecord import changes, check_fixed
from tools.run.runtime import resolve_device, seed_epoch, seed_global, use_bf16
from tools.run.signals import StopFlag, Stopped
from tools.caffe.solver import CaffeSolver, check_solver, override
from tools.run.tensorboard import Scalars

from .backbones import build_backbone, first_conv
from .config import FIXED_ON_RESUME, RUN_FIELDS, SOLVER_OVERRIDES, FinetuneConfig
from .data import augmentation, loaders
from .datasets import load_dataset
from .early_stopping import EarlyStopping
from .lowshot import draw_labelled, parse_budget
from .model import TransferModel, make_head
from .passes import evaluate, train_epoch
from .probe_tables import write_csv
from .twins import make_twin

# the files a run writes: any of them in --out means the folder holds a run
RUN_FILES = ("config.json", "stats.pt", "checkpoint.pt", "history.csv", "model.pt", "summary.json")


def _solver(source, flag, cfg):
    """The SolverParameter --head-solver / --finetune-solver names (a file, text or a shipped solver's name), with
    --base-lr / --weight-decay / --momentum over it, checked as Caffe checks it; a file with no solver field at all
    (a net given by mistake) is one line, not a page of unknown-field warnings."""
    import warnings

    import prototxt
    option = "--" + flag.replace("_", "-")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        sp = read_solver(prototxt.find_solver(source, option))
    if not sp.ByteSize():
        raise UserError(f"{option} {source}: no solver settings in it (a net prototxt?)")
    for w in said:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    check_solver(override(sp, cfg, SOLVER_OVERRIDES))
    return sp


def _phases(cfg, scratch):
    if scratch and cfg.phase == "both":
        return ["finetune"]  # the seeds' own nets are trained whole, from scratch
    return ["head", "finetune"] if cfg.phase == "both" else [cfg.phase]


def _retrained(cfg, backbone):
    """The blocks after --freeze-through's (none without it)."""
    if cfg.freeze_through is None:
        return []
    if cfg.unfreeze:
        raise UserError("--freeze-through and --unfreeze both say which blocks train: give one of them")
    blocks = list(backbone.blocks)
    if cfg.freeze_through not in blocks:
        raise UserError(f"--freeze-through {cfg.freeze_through}: not a block of {cfg.model} ({', '.join(blocks)})")
    return blocks[blocks.index(cfg.freeze_through) + 1:]


def _configure(model, phase, cfg):
    if phase == "head":
        model.freeze_backbone()
    elif cfg.freeze_through is not None:
        model.freeze_backbone(except_blocks=tuple(_retrained(cfg, model.backbone)))
    elif cfg.unfreeze:
        model.freeze_backbone(except_blocks=tuple(cfg.unfreeze))
    else:
        model.unfreeze_all()
    sp = _solver(cfg.head_solver if phase == "head" else cfg.finetune_solver,
                 "head_solver" if phase == "head" else "finetune_solver", cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    return CaffeSolver([dict(params=params)], sp)


def finetune(cfg: FinetuneConfig):
    """Run the configured phases; writes history.csv, lr.csv, model.pt, plots and, last, summary.json into
    cfg.out. Returns (summary, model); a resumed run that had already finished returns its summary and None."""
    if cfg.labels_per_class is not None:
        parse_budget(cfg.labels_per_class)  # a bad budget is said before the folder is made
    for flag in ("head_solver", "finetune_solver"):  # both, whichever phases run: a wrong file is said now
        _solver(getattr(cfg, flag), flag, cfg)
    # two runs writing one folder would interleave its files; a start refused before config.json leaves none
    with RunFolder(cfg.out, "transfer run", state=RUN_FILES) as folder:
        folder.decide(cfg.resume)
        return _finetune(cfg, folder.open())


def _claim(cfg, folder):
    """Start, or resume with the recorded settings kept: refused in one line before anything is written."""
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    cfg.resume = folder.resuming
    if not cfg.resume:
        return None, {}
    recorded = folder.recorded(RUN_FIELDS + ("classes",))
    if not recorded:
        raise UserError(f"{os.path.join(cfg.out, 'config.json')}: no run to resume here")
    if cfg.input_size is None:  # the model's own, which config.json records resolved
        cfg.input_size = recorded.get("input_size")
    check_fixed(cfg, recorded, cfg.out, FIXED_ON_RESUME)
    ck = load_checkpoint(ckpt_path) if os.path.exists(ckpt_path) else None
    return ck, recorded


def _finished(cfg, ck):
    """The summary of a run that has nothing left to do with these settings, else None."""
    path = os.path.join(cfg.out, "summary.json")
    if ck is None or not os.path.exists(path):
        return None
    phases = ck.get("phases") or _phases(cfg, False)
    last = ck["phase_index"] == len(phases) - 1
    if not last or not (ck["stopper"]["fired"] or ck["epoch"] + 1 >= _max_epochs(cfg, phases[-1])):
        return None
    with open(path) as f:
        return json.load(f)


def _max_epochs(cfg, phase):
    most = cfg.head_epochs if phase == "head" else cfg.finetune_epochs
    return min(most, cfg.epochs) if cfg.epochs else most


def _finetune(cfg, folder):
    ck, recorded = _claim(cfg, folder)
    done = _finished(cfg, ck)
    if done is not None:
        print(f"{cfg.out}: the run is finished (summary.json); nothing to resume")
        return done, None
    device = resolve_device(cfg.device)
    seed_global(cfg.seed)
    backbone = build_backbone(cfg.model, cfg.weights)
    size = cfg.input_size or backbone.input_size
    splits = load_dataset(cfg.dataset, cfg.data_root, cfg.val_fraction, cfg.seed, cfg.limit_train, cfg.limit_test,
                          cfg.limit_val)
    classes = splits["train"].classes
    if cfg.labels_per_class is not None:  # the labelled few; validation stays the split it was
        if splits["train"].labels.ndim != 1:
            raise UserError(f"--labels-per-class: {cfg.dataset} is multi-label; a class-balanced draw needs one "
                            "class per image")
        budget = parse_budget(cfg.labels_per_class)
        if budget != "all":
            splits["train"] = splits["train"].subset(draw_labelled(splits["train"].labels, budget, cfg.label_draw,
                                                                   cfg.seed))
    if recorded and list(recorded.get("classes", classes)) != list(classes):
        raise UserError(f"{cfg.data_root}: classes {classes[:5]}... are not those of the run in {cfg.out}")
    model = TransferModel(backbone, make_head(cfg.head, backbone.feature_dim_at(size), len(classes),
                                              cfg.seed)).to(device)
    if use_bf16(cfg.precision, device) and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    stats_path = os.path.join(cfg.out, "stats.pt")
    stats = tuple(load_checkpoint(stats_path, "the run's input statistics")) \
        if recorded and os.path.exists(stats_path) else None
    preprocess = getattr(backbone, "preprocess", None) if cfg.input_norm == "backbone" else None
    data, stats = loaders(splits, size, backbone.in_channels, cfg.batch_size, workers=cfg.workers,
                          augment=augmentation(**cfg.augment), seed=cfg.seed, stats=stats, preprocess=preprocess,
                          progress=cfg.progress)
    if cfg.twin_seed is not None or cfg.freeze_through is not None:  # fresh weights, scaled to this run's input
        sample = next(iter(torch.utils.data.DataLoader(data["train"].dataset, batch_size=cfg.batch_size)))[0]
        fresh = make_twin(backbone, cfg.seed if cfg.twin_seed is None else cfg.twin_seed, cfg.twin_init, cfg.model,
                          sample)
        if cfg.twin_seed is not None:
            model.backbone = fresh
        for name in _retrained(cfg, backbone):
            model.backbone.block(name).load_state_dict(fresh.block(name).state_dict())
        model = model.to(device)
        if use_bf16(cfg.precision, device) and device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
    phases = _phases(cfg, backbone.scratch)
    history = ck["history"] if ck else []
    if not recorded:  # config.json describes the start; each resume is recorded beside it
        folder.write(dict(
            asdict(cfg), classes=classes, input_size=size, mean=stats[0].tolist(), std=stats[1].tolist(),
            backbone=getattr(backbone, "record", {}), phases=phases,
            input=("the backbone's own" if preprocess else "standardised by the training split")))
        save_checkpoint(stats_path, list(stats))  # after the record: a folder with stats alone would block a start
    else:
        folder.write(dict(epochs_done=len(history), device=str(device), changed=changes(cfg, recorded, RUN_FIELDS)),
                     resume_index=len(history))
    print(f"transfer: {cfg.model} on {cfg.dataset} ({len(classes)} classes), {device}, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters; train {len(splits['train'])}, "
          f"val {len(splits['val'])}, test {len(splits['test'])} images at {size} px; phases "
          f"{' then '.join(phases)}; {'resuming after ' + str(len(history)) + ' epochs; ' if ck else ''}"
          f"writing {cfg.out}", flush=True)
    conv1_before = first_conv(model)
    board = Scalars(cfg.out, cfg.tensorboard)
    try:
        result = _train(cfg, model, data, phases, ck, device, len(classes), board)
        summary = _finish(cfg, model, data, splits, result, conv1_before, device)
        board.add("test/accuracy", summary["test_accuracy"], summary["epochs_run"])
    finally:
        board.close()
    return summary, model


def _train(cfg, model, data, phases, ck, device, n_classes, board):
    """The phases from where the checkpoint left them; returns {phase: result} of all phases. Ctrl-C or
    SIGTERM: the batch finishes, what the last checkpoint holds is said, and Stopped is raised."""
    with StopFlag() as stop:
        history, lr_rows, result = _run_phases(cfg, model, data, phases, ck, device, n_classes, board, stop)
    write_csv(os.path.join(cfg.out, "history.csv"), history)
    write_csv(os.path.join(cfg.out, "lr.csv"), lr_rows)
    return result


def _kept(ckpt_path, history):
    if not os.path.exists(ckpt_path) or not history:
        return "no epoch has finished yet, so nothing is kept"
    return f"{os.path.basename(ckpt_path)} holds {history[-1]['phase']} epoch {history[-1]['epoch'] + 1}"


def _run_phases(cfg, model, data, phases, ck, device, n_classes, board, stop):
    start_phase, history, lr_rows, result = 0, [], [], {}
    if ck is not None:
        start_phase, history, lr_rows = ck["phase_index"], ck["history"], ck["lr_rows"]
        result = dict(ck.get("done") or {})  # the phases finished before the checkpoint
        model.load_state_dict(ck["model"])
    ckpt_path = os.path.join(cfg.out, "checkpoint.pt")
    for pi in range(start_phase, len(phases)):
        phase = phases[pi]
        solver = _configure(model, phase, cfg)
        stopper = EarlyStopping(cfg.head_patience if phase == "head" else cfg.finetune_patience, cfg.eps)
        max_epochs, first = _max_epochs(cfg, phase), 0
        if ck is not None and pi == start_phase:
            solver.load_state_dict(ck["solver"])
            stopper.load_state_dict(ck["stopper"], ck["best_state"])
            first = max_epochs if stopper.fired else ck["epoch"] + 1  # a fired phase is over
        try:
            for epoch in range(first, max_epochs):
                # shuffling and dropout of each epoch depend only on (seed, phase, epoch): resumable
                seed_epoch(cfg.seed, pi, epoch, data["train"].generator)
                t0 = time.time()
                bar = tqdm(total=len(data["train"]), desc=f"{phase} {epoch + 1}/{max_epochs}", leave=False,
                           disable=not cfg.progress)
                with bar:
                    tr_loss, tr_acc, lrs, ran = train_epoch(model, solver, data["train"], device, bar, stop,
                                                       use_bf16(cfg.precision, device))
                if stop.signum is not None and ran < len(data["train"]):  # a part of an epoch is not kept
                    raise Stopped(stop.signum, f"{stop.name} in {phase} epoch {epoch + 1}/{max_epochs} (batch {ran} "
                                               f"of {len(data['train'])}); {_kept(ckpt_path, history)}")
                val = evaluate(model, data["val"], device, n_classes, "validation" if cfg.progress else None,
                               cfg.precision)
                history.append(dict(phase=phase, epoch=epoch, train_loss=tr_loss, train_acc=tr_acc,
                                    val_loss=val["loss"], val_acc=val["accuracy"], seconds=time.time() - t0))
                lr_rows += [dict(phase=phase, iteration=solver.iter - len(lrs) + i, lr=lr) for i, lr in enumerate(lrs)]
                write_csv(os.path.join(cfg.out, "history.csv"), history)  # per epoch: a crash keeps it
                early = stopper.step(epoch, val["loss"], model)
                for key, value in (("train/loss", tr_loss), ("train/accuracy", tr_acc), ("val/loss", val["loss"]),
                                   ("val/accuracy", val["accuracy"]), ("train/lr", lrs[-1])):
                    board.add(key, value, len(history))  # the epoch across both phases, as curves.png
                tqdm.write(f"{phase} epoch {epoch + 1}/{max_epochs}: train loss {tr_loss:.4f} acc {tr_acc:.4f}, "
                           f"val loss {val['loss']:.4f} acc {val['accuracy']:.4f}, lr {lrs[-1]:.3g}, "
                           f"{time.time() - t0:.1f} s" + (" (early stop)" if early else ""))
                save_checkpoint(ckpt_path, dict(model=model.state_dict(), solver=solver.state_dict(),
                                                stopper=stopper.state_dict(), best_state=stopper.best_state,
                                                phase_index=pi, phases=phases, epoch=epoch, done=result,
                                                history=history, lr_rows=lr_rows))
                if stop.signum is not None:
                    raise Stopped(stop.signum, f"{stop.name} after {phase} epoch {epoch + 1}/{max_epochs}; "
                                               f"{_kept(ckpt_path, history)}")
                if early:
                    break
        finally:
            stopper.restore(model)  # best weights on every exit path, fired or not
        result[phase] = dict(epochs_run=sum(1 for h in history if h["phase"] == phase),
                             best_val_loss=stopper.best, best_epoch=stopper.best_epoch,
                             early_stopped=stopper.fired)
    return history, lr_rows, result


def _finish(cfg, model, data, splits, result, conv1_before, device):
    """Test, model.pt and plots, then summary.json last: its presence says the run is complete."""
    classes = splits["train"].classes
    test = evaluate(model, data["test"], device, len(classes), "test" if cfg.progress else None, cfg.precision)
    conf = test["confusion"]
    if conf is not None:
        per_class = dict(per_class_accuracy=dict(zip(classes, (conf.diag().double() /
                                                               conf.sum(1).clamp_min(1).double()).tolist())),
                         confusion_matrix=conf.tolist())
    else:  # multi-label: test_accuracy is the VOC07 mAP
        per_class = dict(metric="mAP (VOC07, 11-point)", per_class_ap=dict(zip(
            classes, [None if a != a else a for a in test["aps"]])))
    save_checkpoint(os.path.join(cfg.out, "model.pt"), dict(model=model.state_dict(), classes=classes,
                                                           model_name=cfg.model, head=cfg.head))
    summary = dict(dataset=cfg.dataset, model=cfg.model, phases=result, test_accuracy=test["accuracy"],
                   test_loss=test["loss"], epochs_run=sum(r["epochs_run"] for r in result.values()),
                   best_val_loss=min(r["best_val_loss"] for r in result.values()),
                   **per_class, n_train=len(splits["train"]), n_val=len(splits["val"]), n_test=len(splits["test"]),
                   labels_per_class=cfg.labels_per_class, label_draw=cfg.label_draw)
    from .plots import plot_filters, plot_history, plot_lr
    plot_history(cfg.out, summary)
    plot_lr(cfg.out)
    if conv1_before is not None:
        plot_filters(os.path.join(cfg.out, "filters.png"), ("conv1 before", conv1_before),
                     ("conv1 after", first_conv(model)), bgr=cfg.model == "cfn")
    _write_json(os.path.join(cfg.out, "summary.json"), summary)
    print(f"test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}); wrote {cfg.out}")
    return summary


def load_run(out):
    """(model, config dict) of a finished `transfer` run folder, for plots and inference."""
    conf = RunFolder(out, "transfer run").read()
    if not conf:
        raise UserError(f"{out}: not a transfer run folder (no config.json)")
    weights = conf.get("weights") or "none"
    backbone = build_backbone(conf["model"], weights)
    size = conf.get("input_size") or backbone.input_size
    model = TransferModel(backbone, make_head(conf["head"], backbone.feature_dim_at(size), len(conf["classes"])))
    model.load_state_dict(load_checkpoint(os.path.join(out, "model.pt"))["model"])
    return model.eval(), conf


def _write_json(path, obj):
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2)


def stats_of(summary):
    return {k: summary[k] for k in ("test_accuracy", "epochs_run", "best_val_loss")}


