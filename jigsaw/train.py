"""CFN pretraining driven by a Caffe solver: `train` reads top to bottom (set up, then step, log,
snapshot and validate until max_iter); the parts are the functions above it.

Every random choice of iteration k (which images, the puzzle draws, dropout) is seeded by
(seed, k), so `--resume` from a checkpoint replays exactly the iterations the uninterrupted run
would have made. Multi-GPU: launch with torchrun; each process takes a slice of every batch.
"""
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any, Optional

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

import prototxt
from tools.run.atomic import ensure_dir
from tools.run.checkpoint import save_checkpoint
from tools.run.errors import UserError
from tools.caffe.prototxt import read_solver
from tools.run.folder import RunFolder
from tools.run.signals import StopFlag
from tools.run.runtime import resolve_device, stream, use_bf16
from tools.caffe.solver import CaffeSolver, override
from tools.run.tensorboard import Scalars

from .batches import BatchStream, split_indices
from .caffe_form import to_caffe
from .checkpoint import cfn_payload, resume_into, resume_trunk, trunk_payload
from .config import TrainConfig, check_resume, recorded_config
from .logs import TrainLogs, diverged
from .methods import build_method, build_model
from .permutations import load_permutations
from .recipes import recipe_record
from .store import check_layout, fingerprint, open_images
from .tiles import PuzzleConfig, draw, make_puzzles

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class _Run:
    """What setting up a run builds; the loop's parts read it."""
    cfg: TrainConfig
    sp: Any                 # the SolverParameter, with the command line's overrides
    rank: int
    world: int
    device: torch.device
    fast: bool              # bf16 autocast
    perms_np: np.ndarray
    perms: torch.Tensor
    pcfg: PuzzleConfig
    record: dict            # recipe name and options, into every checkpoint
    source: Any
    val_source: Any
    train_pool: np.ndarray
    val_pool: np.ndarray
    model: Any              # the CFN, or a trunk under its method's head (trunk_nets.py)
    solver: CaffeSolver
    last: str               # the run's last.pt
    folder: Optional[RunFolder] = None  # cfg.out: locked (rank 0) for the run's life, its record
    start: int = 0
    saved: Optional[int] = None  # the iteration last.pt holds
    board: Any = None       # TensorBoard scalars (tools.run.tensorboard), a no-op unless --tensorboard
    monitor: Any = None     # --monitor: called with (model, recipe, device) -> {"knn_conv1": ...}
    method: Any = None      # methods.py: the pretext's loss, validation and checkpointed state


def _solver_param(cfg: TrainConfig):
    sp = override(read_solver(cfg.solver), cfg, ("max_iter", "test_interval", "snapshot", "display", "base_lr",
                                                 "weight_decay", "momentum"))
    if cfg.test_iter is not None:
        del sp.test_iter[:]
        sp.test_iter.append(cfg.test_iter)
    if sp.max_iter <= 0:
        raise UserError(f"{cfg.solver}: max_iter must be positive")
    if cfg.monitor and not sp.test_interval:
        raise UserError(f"--monitor measures at every test interval, and {cfg.solver} has test_interval 0: give "
                        "--test-interval N")
    return sp


def _processes(cfg: TrainConfig):
    """(rank, world size, device): one process, or one of torchrun's."""
    device = resolve_device(cfg.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.batch_size % world:
        raise UserError(f"batch size {cfg.batch_size} must divide evenly over {world} processes")
    if device.type == "cuda":
        device = torch.device(f"cuda:{torch.cuda.current_device()}")
    return rank, world, device


def _compile_mode(value):
    if value in (None, False, "", "off"):
        return None
    mode = "default" if value is True else value
    if mode not in COMPILE_MODES:
        raise UserError(f"compile mode {value!r}: expected one of {', '.join(COMPILE_MODES)}")
    return mode


def _open_data(cfg: TrainConfig, pcfg: PuzzleConfig, device, test_iter):
    """(source, validation source, training indices, validation indices)."""
    source = open_images(cfg.data, workers=cfg.workers, decode=cfg.decode, device=device, layout=pcfg.layout)
    check_layout(source, pcfg, cfg.data)
    if cfg.val_data:
        val_source = open_images(cfg.val_data, workers=cfg.workers, decode=cfg.decode, device=device,
                                 layout=pcfg.layout)
        check_layout(val_source, pcfg, cfg.val_data)
        train_pool, val_pool = np.arange(len(source)), np.arange(len(val_source))
    else:
        val_source = source
        train_pool, val_pool = split_indices(len(source), cfg.val_fraction, cfg.seed)
    if test_iter:  # test_iter batches of validation puzzles, several per image when few images
        want = test_iter * cfg.batch_size
        val_pool = np.resize(val_pool, max(want, len(val_pool)) if len(val_pool) < want else want)
    return source, val_source, train_pool, val_pool


def _calibrate(run: _Run):
    """He init (init msra) scaled to the tiles: one fixed, seeded batch, the same on every rank."""
    calib = run.train_pool[:min(len(run.train_pool), run.cfg.batch_size)]
    images = run.source.read(calib)
    images = (images if torch.is_tensor(images) else torch.from_numpy(images)).to(run.device)
    d = draw(len(calib), len(run.perms_np), images.shape[1:3], run.pcfg, stream(run.cfg.seed, 7))
    run.model.scale_to_input(make_puzzles(images, run.perms, d, run.pcfg))


def _restore(run: _Run):
    """Continue from last.pt: the same net, permutations and recipe, or one line saying what differs."""
    if run.cfg.trunk == "cfn":
        solver_state, run.start = resume_into(run.last, run.model, run.perms_np, run.pcfg, run.cfg.recipe,
                                              run.record["recipe_options"])
    else:
        solver_state, method_state, run.start = resume_trunk(run.last, run.cfg, run.model, run.perms_np)
        run.method.load_state(method_state)
    run.solver.load_state_dict(solver_state)
    run.saved = run.start


def _setup(cfg: TrainConfig) -> _Run:
    folder = RunFolder(cfg.out, "jigsaw train", state=("last.pt",))
    if folder.decide(cfg.resume):  # before anything is opened: the record says what may not change
        check_resume(cfg, recorded_config(cfg.out), cfg.out)
    cfg.resume = folder.resuming
    rank, world, device = _processes(cfg)
    sp = _solver_param(cfg)
    perms_np = load_permutations(cfg.permutations) if cfg.method == "jigsaw" else np.zeros((0, 9), np.int64)
    pcfg, record = recipe_record(cfg.recipe, gray_prob=cfg.gray_prob, donor=cfg.donor, cell=cfg.cell,
                                 tile=cfg.tile)
    source, val_source, train_pool, val_pool = _open_data(cfg, pcfg, device, sp.test_iter[0] if sp.test_iter
                                                          else 0)
    fast = use_bf16(cfg.precision, device)
    model = build_model(cfg, len(perms_np), pcfg.tile, cfg.seed).to(device)
    if fast and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    run = _Run(cfg, sp, rank, world, device, fast, perms_np, torch.from_numpy(perms_np).to(device), pcfg,
               record, source, val_source, train_pool, val_pool, model, None, os.path.join(cfg.out, "last.pt"))
    run.method = build_method(run, model)
    if cfg.init == "msra" and not cfg.resume and cfg.trunk == "cfn":  # a BatchNorm trunk needs no scaling
        _calibrate(run)
    run.solver = CaffeSolver(model.param_groups(), sp)
    run.folder = folder
    try:  # two runs writing one folder would interleave its logs and checkpoints: rank 0 locks it
        folder.open(lock=rank == 0)
        _claim(run)
    except BaseException:
        folder.abandon()  # a refused start leaves no folder (or lock) behind
        raise
    return run


def _claim(run: _Run):
    """The output folder, locked: continue or start the record."""
    cfg, rank = run.cfg, run.rank
    if rank == 0:
        RunFolder.clean(os.path.join(cfg.out, "caffe"))
    data_id = fingerprint(run.source)
    if cfg.resume:
        was = run.folder.recorded(("data", "data_fingerprint"))
        if was.get("data_fingerprint") not in (None, data_id):
            raise UserError(f"{cfg.data}: not the images the run in {cfg.out} was trained on "
                            f"({was.get('data')}); resume with those, or start a new --out")
        _restore(run)
    if rank == 0:  # config.json records the start; each resume gets its own record beside it
        first = not cfg.resume or not run.folder.has_record()
        run.folder.write(dict(asdict(cfg), device=run.device.type if cfg.device == "auto" else cfg.device,
                              world_size=run.world, start_iter=run.start, images=len(run.source),
                              data_fingerprint=data_id), resume_index=None if first else run.start)


def _step(run: _Run, net, batches: BatchStream, part: slice):
    """One solver iteration (iter_size forward/backward passes); (loss, hits) stay on the device."""
    cfg, sp = run.cfg, run.sp
    loss_sum = hits = 0
    for _ in range(sp.iter_size):
        k, images = batches.next()
        loss, correct = run.method.loss(net, images, k, part)
        loss.backward()  # gradients add up over iter_size passes; the solver divides
        loss_sum = loss_sum + loss.detach() / sp.iter_size  # stays on the device: no sync
        hits = hits + correct
    lr = run.solver.lr
    run.solver.step()
    run.solver.zero_grad(set_to_none=True)
    run.method.after_step()
    return loss_sum, hits.to(loss_sum.dtype), lr


def _snapshot(run: _Run, it):
    """last.pt and the Caffe form; never weights that are no longer finite."""
    # every rank holds the same weights, so every rank stops alike; one device sync per snapshot
    if not bool(torch.stack([p.detach().isfinite().all() for p in run.model.parameters()]).all()):
        raise diverged(run, it, "the weights are no longer finite")
    if run.rank != 0:
        return
    if run.cfg.trunk != "cfn":
        save_checkpoint(run.last, trunk_payload(run.cfg, run.model, run.perms_np, run.record, it,
                                                run.solver.state_dict(), run.method.state(), run.method.input_size))
        run.saved = it
        return
    save_checkpoint(run.last, cfn_payload(run.model, run.perms_np, run.record, it, run.solver.state_dict(),
                                          run.cfg.seed))
    caffe_dir = os.path.join(run.cfg.out, "caffe")
    ensure_dir(caffe_dir)
    to_caffe(run.model, os.path.join(caffe_dir, "cfn_deploy.prototxt"),
                       os.path.join(caffe_dir, f"cfn_iter_{it}.caffemodel"), recipe=run.pcfg,
                       permutations=run.perms_np, train_val_path=os.path.join(caffe_dir, "cfn_train_val.prototxt"))
    run.saved = it


def _validate(run: _Run, logs: TrainLogs, it):
    if run.rank != 0:
        return None
    m = run.method.validate()
    tqdm.write(f"Iteration {it}, Testing net: loss = {m['loss']:.4f}, top-1 = {m['top1']:.4f}, "
               f"top-5 = {m['top5']:.4f} (chance {run.method.chance:.4f})")
    for k in ("loss", "top1", "top5"):
        run.board.add(f"val/{k}", m[k], it)
    if run.monitor is not None:
        knn = run.monitor(run.model, run.pcfg, run.device)
        m.update(knn, monitor_s=run.monitor.seconds[-1])
        for k, v in knn.items():
            run.board.add(f"monitor/{k}", v, it)
        share = f", {100 * m['monitor_s'] / logs.trained_s:.1f} % of the training since the last test" \
            if logs.trained_s > 0 else ""
        tqdm.write(f"Iteration {it}, kNN monitor: " + ", ".join(f"{k[4:]} {v:.4f}" for k, v in knn.items())
                   + f" ({m['monitor_s']:.1f} s{share})")
    logs.write("val", dict(iter=it, **{k: f"{v:.6f}" for k, v in m.items()}))
    return m


# Puzzles of one image share its content: validation accuracy varies with the images drawn, and with fewer
# than this many images its standard error exceeds the gains a run shows (a few points).
MIN_VAL_IMAGES = 100


def _pretext(run: _Run):
    if run.cfg.method == "pirl":
        bank = run.method.bank
        return f"PIRL ({bank.loss_type}, memory bank of {len(bank.memory)}, {bank.negatives} negatives)"
    return f"{len(run.perms_np)} permutations"


def _header(run: _Run):
    cfg, sp = run.cfg, run.sp
    params = sum(p.numel() for p in run.model.parameters())
    tqdm.write(f"jigsaw train: {len(run.train_pool)} training images from {cfg.data}, validation on "
               f"{len(run.val_pool)} puzzles of {len(np.unique(run.val_pool))} images; {_pretext(run)}; "
               f"recipe {cfg.recipe}; {'CFN' if cfg.trunk == 'cfn' else cfg.trunk} width {cfg.width:g} "
               f"({params:,} parameters); "
               f"{sp.type or 'SGD'} base_lr {sp.base_lr:g}, batch {cfg.batch_size}, max_iter {sp.max_iter}; "
               f"{run.device}{', bf16' if run.fast else ''}"
               f"{f' x {run.world} processes' if run.world > 1 else ''}; "
               f"{'resuming at iteration ' + str(run.start) if run.start else 'starting'}; writing {cfg.out}")
    images = len(np.unique(run.val_pool))
    if sp.test_interval and images < MIN_VAL_IMAGES:
        if len(run.val_pool) < MIN_VAL_IMAGES:  # test_iter x batch_size puzzles cannot cover enough images
            fix = f"--test-iter {-(-MIN_VAL_IMAGES // cfg.batch_size)}: batches of {cfg.batch_size} puzzles"
        else:
            fraction = MIN_VAL_IMAGES / len(run.source)
            fix = (f"--val-fraction {fraction:.2g} here, or " if fraction < 0.5 else "") + \
                "--val-data STORE: a store of other images"
        warnings.warn(f"validation draws its puzzles from {images} image{'s' * (images != 1)}: its accuracy says "
                      f"little about images the net has not seen; it needs about {MIN_VAL_IMAGES} ({fix})",
                      stacklevel=2)


def train(cfg: TrainConfig, monitor=None) -> Optional[dict]:
    """Train a CFN; returns the final validation metrics (rank 0) and writes everything to cfg.out.
    `monitor` (the `--monitor` of the command line, built there: transfer.monitor) is called at every
    validation with (model, recipe, device) and returns accuracies for val.csv."""
    if bool(cfg.monitor) != (monitor is not None):
        raise ValueError("cfg.monitor and the monitor passed must go together (jigsaw.cli builds it)")
    run, logs, net, batches, part = _start(cfg, monitor)
    stop = StopFlag()
    bar = tqdm(total=run.sp.max_iter, initial=run.start, unit="it", desc="train",
               disable=not cfg.progress or run.rank)
    try:
        return _loop(run, logs, net, batches, part, bar, stop)
    finally:
        bar.close()
        stop.restore()
        _close(run, logs, batches)


def _start(cfg, monitor):
    """The run set up in its folder (resumed or new), its logs, the net as it steps (DDP, compiled), the batch
    stream from the run's iteration on, and this rank's part of each batch."""
    # the record works from any folder; a shipped solver's name becomes its file
    cfg = replace(cfg, solver=prototxt.find_solver(cfg.solver))
    cfg = replace(cfg, **{f: os.path.abspath(getattr(cfg, f)) for f in ("data", "permutations", "solver",
                                                                        "val_data") if getattr(cfg, f)})
    run = _setup(cfg)
    run.board = Scalars(cfg.out, cfg.tensorboard and run.rank == 0)
    run.monitor = monitor if run.rank == 0 else None
    if monitor is not None and hasattr(monitor, "watch"):
        monitor.watch(run.model)  # which layers: the CFN's convs or the trunk's stages
    logs = TrainLogs(run, [f"knn_{layer}" for layer in monitor.layers] + ["monitor_s"] if monitor else ())
    if run.rank == 0:
        _header(run)
        if monitor is not None:
            tqdm.write(monitor.describe())
    net = run.model
    if run.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(run.model)
    mode = _compile_mode(cfg.compile)
    if mode:
        net = torch.compile(net, mode=None if mode == "default" else mode)
    part = slice(run.rank * cfg.batch_size // run.world, (run.rank + 1) * cfg.batch_size // run.world)
    batches = BatchStream(run.source, run.train_pool, cfg.batch_size, cfg.seed, run.start * run.sp.iter_size,
                          part=part, device=run.device)
    return run, logs, net, batches, part


def _loop(run, logs, net, batches, part, bar, stop):
    """Step from the run's iteration to max_iter: validate, log, snapshot at their intervals; on Ctrl-C or
    SIGTERM, snapshot and leave with the command that resumes. Returns the last validation's metrics."""
    sp, it, metrics = run.sp, run.start, None
    while it < sp.max_iter:
        # the monitor always measures the initial net: the baseline its curve starts from
        if sp.test_interval and it % sp.test_interval == 0 and (it > 0 or sp.test_initialization or run.cfg.monitor):
            logs.flush()
            metrics = _validate(run, logs, it)
            logs.window = time.perf_counter()  # validation time is not training throughput
            logs.trained_s = 0.0
        logs.pending.append((it, *_step(run, net, batches, part)))
        it += 1
        bar.update(1)
        if it % max(1, run.cfg.log_every) == 0:
            logs.flush()
        if sp.snapshot and it % sp.snapshot == 0:
            logs.flush()
            _snapshot(run, it)
        if stop.signum is not None:
            logs.flush()
            _snapshot(run, it)
            if run.rank == 0:
                tqdm.write(f"jigsaw train: {stop.name} at iteration {it}; {run.last} "
                           f"holds it; resume with: jigsaw train --out {run.cfg.out} --resume", file=sys.stderr)
            raise SystemExit(128 + stop.signum)
    logs.flush()
    if sp.snapshot_after_train and not (sp.snapshot and it % sp.snapshot == 0):
        _snapshot(run, it)
    if sp.test_interval and it % sp.test_interval == 0:
        metrics = _validate(run, logs, it)
    return metrics


def _close(run, logs, batches):
    """Whatever happened: the batch stream and TensorBoard closed, the curves drawn (rank 0), the ranks
    joined, the run folder closed."""
    batches.close()
    run.board.close()
    if run.rank == 0 and os.path.exists(logs.paths["train"]):
        from .plots import plot_training
        plot_training(run.cfg.out, chance=run.method.chance, window=run.sp.average_loss,
                      test_interval=run.sp.test_interval)
    if run.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    run.folder.close()
