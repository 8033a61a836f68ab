"""CFN pretraining driven by a Caffe solver: the whole loop, top to bottom.

Every random choice of iteration k (which images, the puzzle draws, dropout) is seeded by
(seed, k), so `--resume` from a checkpoint replays exactly the iterations the uninterrupted run
would have made. Multi-GPU: launch with torchrun; each process takes a slice of every batch.
"""
import csv
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from tools.atomic import atomic_open, ensure_dir
from tools.errors import CaffeError
from tools.prototxt import read_solver
from tools.solver import CaffeSolver

from .batches import BatchStream, split_indices
from .cfn import CFN
from .checkpoint import load_checkpoint, save_checkpoint
from .permutations import load_permutations
from .recipes import DEFAULT as DEFAULT_RECIPE
from .recipes import recipe_of, recipe_record
from .store import check_layout, open_images
from .tiles import draw, make_puzzles

PROTOTXT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "prototxt")
DEFAULT_SOLVER = os.path.join(PROTOTXT_DIR, "cfn_solver.prototxt")


@dataclass
class TrainConfig:
    data: str
    permutations: str
    out: str
    solver: str = DEFAULT_SOLVER
    val_data: Optional[str] = None
    val_fraction: float = 0.05
    batch_size: int = 256
    width: float = 1.0
    dropout: float = 0.5
    init: str = "caffe"          # "caffe" fillers, or "msra" for a faster start
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"      # "auto" (bf16 on CUDA, fp32 elsewhere), "bf16" or "fp32"
    compile: Optional[str] = None  # torch.compile mode: default, reduce-overhead (CUDA graphs), max-autotune
    log_every: int = 20          # iterations per log flush; the loop waits for the GPU only then
    recipe: str = DEFAULT_RECIPE  # puzzles: jps (the fork's code), jps++, paper, bbrattoli
    gray_prob: float = 0.0       # paper / bbrattoli: probability of a grayscale image
    donor: str = "same"          # jps++: substitute tiles from the "same" image (the fork) or "other"
    cell: Optional[int] = None   # another grid (e.g. small images): cell px, crop 3 cells ...
    tile: Optional[int] = None   # ... and tile px, at offsets 0..cell-tile (recipes.geometry)
    workers: int = 0             # decoding processes for a raw image folder
    decode: str = "cpu"          # raw folder: "cpu" (PIL in `workers` processes) or "device" (torchvision.io)
    max_iter: Optional[int] = None
    test_interval: Optional[int] = None
    test_iter: Optional[int] = None
    snapshot: Optional[int] = None
    display: Optional[int] = None
    base_lr: Optional[float] = None
    resume: bool = False
    progress: bool = True


class _StopFlag:
    """SIGINT/SIGTERM ask the loop to checkpoint and leave after the current iteration."""

    def __init__(self):
        self.signum = None
        self.old = {s: signal.signal(s, self._set) for s in (signal.SIGINT, signal.SIGTERM)}

    def _set(self, signum, frame):
        if self.signum is not None:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self):
        for s, h in self.old.items():
            signal.signal(s, h)


def _solver_param(cfg):
    sp = read_solver(cfg.solver)
    for field in ("max_iter", "test_interval", "snapshot", "display", "base_lr"):
        if getattr(cfg, field) is not None:
            setattr(sp, field, getattr(cfg, field))
    if cfg.test_iter is not None:
        del sp.test_iter[:]
        sp.test_iter.append(cfg.test_iter)
    if sp.max_iter <= 0:
        raise CaffeError(f"{cfg.solver}: max_iter must be positive")
    return sp


def _device(cfg):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.device == "auto":
        cfg.device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise CaffeError(f"--device {cfg.device}: no CUDA device is available here (use cpu or auto)")
    rank = 0
    if world > 1:
        dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo")
        rank = dist.get_rank()
        if cfg.device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.batch_size % world:
        raise CaffeError(f"batch size {cfg.batch_size} must divide evenly over {world} processes")
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if cfg.device == "cuda" else cfg.device)
    return rank, world, device


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _compile_mode(value):
    if value in (None, False, "", "off"):
        return None
    mode = "default" if value is True else value
    if mode not in COMPILE_MODES:
        raise CaffeError(f"compile mode {value!r}: expected one of {', '.join(COMPILE_MODES)}")
    return mode


# Settings a resumed run must share with its start: they decide the puzzles, the batches, the
# architecture or the replayed random streams. The rest (iterations, logging, device, workers, the
# data's path, base_lr after a divergence) may change, and each resume is recorded beside config.json.
FIXED_ON_RESUME = ("recipe", "gray_prob", "donor", "cell", "tile", "width", "dropout", "init", "seed",
                   "batch_size", "val_fraction", "val_data")
RUN_FIELDS = tuple(f for f in TrainConfig.__dataclass_fields__ if f not in ("resume", "progress"))


def recorded_config(out):
    """The settings a run folder's config.json recorded (TrainConfig fields but the machine's), or {}."""
    path = os.path.join(out, "config.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            record = json.load(f)
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as e:
        raise CaffeError(f"{path}: not a readable run record ({e})") from None
    # the machine is not part of the run: a run started on a GPU resumes on whatever is here
    return {k: v for k, v in record.items() if k in RUN_FIELDS and k not in ("device", "workers")}


def _check_resume(cfg, recorded, out):
    for field in FIXED_ON_RESUME:
        if field in recorded and recorded[field] != getattr(cfg, field):
            raise CaffeError(f"{os.path.join(out, 'config.json')}: the run was started with {field} "
                             f"{recorded[field]!r}; resuming with {getattr(cfg, field)!r} would change it "
                             f"(start a new --out, or resume without --{field.replace('_', '-')})")


def _rng(seed, *parts):
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0]))


class _Logs:
    """log.csv (one row per iteration) and val.csv; a resumed run drops rows at or after its start."""
    TRAIN = ["iter", "loss", "top1", "lr", "puzzles_per_s"]
    VAL = ["iter", "loss", "top1", "top5"]

    def __init__(self, out, start, enabled):
        self.enabled = enabled
        self.paths = {"train": os.path.join(out, "log.csv"), "val": os.path.join(out, "val.csv")}
        if enabled:
            for kind, cols in (("train", self.TRAIN), ("val", self.VAL)):
                rows = []
                if start and os.path.exists(self.paths[kind]):
                    with open(self.paths[kind]) as f:
                        rows = [r for r in csv.DictReader(f) if int(r["iter"]) < start]
                with open(self.paths[kind], "w", newline="") as f:
                    w = csv.DictWriter(f, cols)
                    w.writeheader()
                    w.writerows(rows)

    def write(self, kind, row):
        if self.enabled:
            with open(self.paths[kind], "a", newline="") as f:
                csv.DictWriter(f, self.TRAIN if kind == "train" else self.VAL).writerow(row)


@torch.no_grad()
def evaluate_puzzles(model, source, indices, perms, pcfg, device, batch, seed, fast=False):
    """Pretext loss and top-1/top-5 accuracy on fixed, seeded puzzles (centre crops) of `indices`."""
    was = model.training
    model.eval()
    n, loss, top1, top5 = 0, 0.0, 0, 0
    for start in range(0, len(indices), batch):
        idx = indices[start:start + batch]
        images = source.read(idx)
        images = (images if torch.is_tensor(images) else torch.from_numpy(images)).to(device)
        d = draw(len(idx), len(perms), images.shape[1:3], pcfg, _rng(seed, 99991, start), train=False)
        with torch.autocast(device.type, torch.bfloat16, enabled=fast):
            logits = model(make_puzzles(images, perms, d, pcfg)).float()
        label = d.label.to(device)
        loss += float(F.cross_entropy(logits, label, reduction="sum"))
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += int((best[:, 0] == label).sum())
        top5 += int((best == label[:, None]).any(dim=1).sum())
        n += len(idx)
    model.train(was)
    return dict(loss=loss / max(n, 1), top1=top1 / max(n, 1), top5=top5 / max(n, 1))


def train(cfg):
    """Train a CFN; returns the final validation metrics (rank 0) and writes everything to cfg.out."""
    for field in ("data", "permutations", "solver", "val_data"):  # the record works from any folder
        if getattr(cfg, field):
            setattr(cfg, field, os.path.abspath(getattr(cfg, field)))
    if cfg.resume:  # before anything is opened: the record says what may not change
        _check_resume(cfg, recorded_config(cfg.out), cfg.out)
    rank, world, device = _device(cfg)
    sp = _solver_param(cfg)
    perms_np = load_permutations(cfg.permutations)
    perms = torch.from_numpy(perms_np).to(device)
    pcfg, record = recipe_record(cfg.recipe, gray_prob=cfg.gray_prob, donor=cfg.donor, cell=cfg.cell,
                                 tile=cfg.tile)
    source = open_images(cfg.data, workers=cfg.workers, decode=cfg.decode, device=device, layout=pcfg.layout)
    check_layout(source, pcfg, cfg.data)
    if cfg.val_data:
        val_source = open_images(cfg.val_data, workers=cfg.workers, decode=cfg.decode, device=device,
                                 layout=pcfg.layout)
        check_layout(val_source, pcfg, cfg.val_data)
        train_pool = np.arange(len(source))
        val_pool = np.arange(len(val_source))
    else:
        val_source = source
        train_pool, val_pool = split_indices(len(source), cfg.val_fraction, cfg.seed)
    if sp.test_iter:  # test_iter batches of validation puzzles, several per image when few images
        want = sp.test_iter[0] * cfg.batch_size
        val_pool = np.resize(val_pool, max(want, len(val_pool)) if len(val_pool) < want else want)
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise CaffeError(f"precision {cfg.precision!r}: expected auto, bf16 or fp32")
    # bf16 autocast; the LRN, the loss and the solver's arithmetic stay float32
    fast = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if device.type == "cuda":  # fp32 means fp32 (Caffe's arithmetic), not TF32's 10-bit mantissa
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = fast
    model = CFN(len(perms_np), cfg.width, tile=pcfg.tile, dropout=cfg.dropout, seed=cfg.seed,
                init=cfg.init).to(device)
    if fast and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if cfg.init == "msra" and not cfg.resume:  # one fixed, seeded batch: the same scale on every rank
        calib = train_pool[:min(len(train_pool), cfg.batch_size)]
        images = source.read(calib)
        images = (images if torch.is_tensor(images) else torch.from_numpy(images)).to(device)
        d = draw(len(calib), len(perms_np), images.shape[1:3], pcfg, _rng(cfg.seed, 7))
        model.scale_to_input(make_puzzles(images, perms, d, pcfg))
    solver = CaffeSolver(model.param_groups(), sp)
    ensure_dir(cfg.out)
    if rank == 0:  # temporary files of writers killed mid-write (SIGKILL runs no cleanup)
        for folder in (cfg.out, os.path.join(cfg.out, "caffe")):
            for name in os.listdir(folder) if os.path.isdir(folder) else ():
                if name.startswith(".tmp-"):
                    os.unlink(os.path.join(folder, name))
    last = os.path.join(cfg.out, "last.pt")
    start = 0
    if os.path.exists(last) and not cfg.resume:
        raise CaffeError(f"{cfg.out} already holds a run (last.pt); pass --resume or choose another --out")
    if cfg.resume:
        if not os.path.exists(last):
            raise CaffeError(f"{last}: nothing to resume")
        ck = load_checkpoint(last)
        if dict(ck.get("widths") or {}) != model.widths or \
                ck["model"]["fc6.weight"].shape != model.fc6.weight.shape:
            raise CaffeError(f"{last}: the checkpoint's CFN (widths {dict(ck.get('widths') or {})}, fc6 "
                             f"{tuple(ck['model']['fc6.weight'].shape)}) is not the one these settings build "
                             f"(widths {model.widths}, fc6 {tuple(model.fc6.weight.shape)})")
        if not np.array_equal(ck["permutations"].numpy(), perms_np):
            raise CaffeError(f"{last}: the checkpoint was trained with another permutation set")
        was = recipe_of(ck)
        if was != pcfg:
            raise CaffeError(f"{last}: the run was trained with recipe '{was.recipe}' "
                             f"{dict(ck.get('recipe_options') or {})}; --recipe {cfg.recipe} "
                             f"{record['recipe_options']} would change what its puzzles are")
        model.load_state_dict(ck["model"])
        solver.load_state_dict(ck["solver"])
        start = int(ck["iter"])
    if rank == 0:  # config.json records the start; each resume gets its own record beside it
        first = not cfg.resume or not os.path.exists(os.path.join(cfg.out, "config.json"))
        name = "config.json" if first else f"resume_{start}.json"
        with atomic_open(os.path.join(cfg.out, name), "w") as f:
            json.dump(dict(asdict(cfg), world_size=world, start_iter=start, images=len(source)), f, indent=2)
    logs = _Logs(cfg.out, start, rank == 0)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    mode = _compile_mode(cfg.compile)
    if mode:
        net = torch.compile(net, mode=None if mode == "default" else mode)
    part = slice(rank * cfg.batch_size // world, (rank + 1) * cfg.batch_size // world)
    stream = BatchStream(source, train_pool, cfg.batch_size, cfg.seed, start * sp.iter_size, part=part,
                         device=device)
    stop = _StopFlag()

    saved = [start if cfg.resume else None]  # the iteration last.pt holds

    def diverged(it, what):
        held = f"{last} keeps iteration {saved[0]}" if saved[0] is not None else "no checkpoint was written"
        hint = "try a lower --base-lr"
        if cfg.init == "msra" and sp.type in ("SGD", "Nesterov", ""):
            hint = (f"He init with {sp.type or 'SGD'} diverges on the CFN's 0-255 inputs; use Adam "
                    "(--solver prototxt/cfn_solver_short.prototxt) or --init caffe")
        return CaffeError(f"iteration {it}: {what}; training stopped ({held}); {hint}")

    def snapshot(it):
        # every rank holds the same weights, so every rank stops alike; one device sync per snapshot
        if not bool(torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all()):
            raise diverged(it, "the weights are no longer finite")
        if rank != 0:
            return
        save_checkpoint(last, dict(model=model.state_dict(), solver=solver.state_dict(), iter=it,
                                   permutations=torch.from_numpy(perms_np), widths=model.widths,
                                   seed=cfg.seed, **record))
        caffe_dir = os.path.join(cfg.out, "caffe")
        ensure_dir(caffe_dir)
        model.to_caffe(os.path.join(caffe_dir, "cfn_deploy.prototxt"),
                       os.path.join(caffe_dir, f"cfn_iter_{it}.caffemodel"), recipe=pcfg, permutations=perms_np,
                       train_val_path=os.path.join(caffe_dir, "cfn_train_val.prototxt"))
        saved[0] = it

    def validate(it):
        if rank == 0:
            m = evaluate_puzzles(model, val_source, val_pool, perms, pcfg, device, cfg.batch_size,
                                 cfg.seed, fast)
            logs.write("val", dict(iter=it, **{k: f"{v:.6f}" for k, v in m.items()}))
            tqdm.write(f"Iteration {it}, Testing net: loss = {m['loss']:.4f}, top-1 = {m['top1']:.4f}, "
                       f"top-5 = {m['top5']:.4f} (chance {1 / len(perms_np):.4f})")
            return m
        return None

    it, metrics = start, None
    pending, window = [], [time.perf_counter()]

    def flush():
        """Write the iterations since the last flush: one wait for the device per window, not per step."""
        if not pending:
            return
        stats = torch.stack([torch.stack(p[1:3]) for p in pending]).double()
        if world > 1:
            dist.all_reduce(stats)
            stats[:, 0] /= world
        stats = stats.cpu().numpy()  # the sync
        now = time.perf_counter()
        per_iter = cfg.batch_size * sp.iter_size
        rate = per_iter * len(pending) / (now - window[0])
        for (i, _, _, lr), (loss, hits) in zip(pending, stats):
            logs.write("train", dict(iter=i, loss=f"{loss:.6f}", top1=f"{hits / per_iter:.4f}",
                                     lr=f"{lr:.8g}", puzzles_per_s=f"{rate:.1f}"))
            if not np.isfinite(loss):
                pending.clear()
                raise diverged(i, f"the loss is {loss}")
            if sp.display and i % sp.display == 0:
                tqdm.write(f"Iteration {i}, loss = {loss:.4f}, lr = {lr:.6g}, {rate:.0f} puzzles/s")
        pending.clear()
        window[0] = now

    bar = tqdm(total=sp.max_iter, initial=start, unit="it", desc="train", disable=not cfg.progress or rank)
    try:
        while it < sp.max_iter:
            if sp.test_interval and it % sp.test_interval == 0 and (it > 0 or sp.test_initialization):
                flush()
                metrics = validate(it)
                window[0] = time.perf_counter()  # validation time is not training throughput
            loss_sum = hits = 0
            for micro in range(sp.iter_size):
                k, images = stream.next()
                d = draw(cfg.batch_size, len(perms_np), images.shape[1:3], pcfg, _rng(cfg.seed, k))
                d = d.slice(part)
                torch.manual_seed(int(np.random.SeedSequence([cfg.seed, 3, k, rank]).generate_state(1)[0]))
                tiles = make_puzzles(images.to(device, non_blocking=True), perms, d, pcfg)
                label = d.label.to(device, non_blocking=True)
                with torch.autocast(device.type, torch.bfloat16, enabled=fast):
                    logits = net(tiles)
                loss = F.cross_entropy(logits.float(), label)
                loss.backward()  # gradients add up over iter_size passes; the solver divides
                loss_sum = loss_sum + loss.detach() / sp.iter_size  # stays on the device: no sync
                hits = hits + (logits.detach().argmax(1) == label).sum()
            pending.append((it, loss_sum, hits.to(loss_sum.dtype), solver.lr))
            solver.step()
            solver.zero_grad(set_to_none=True)
            it += 1
            bar.update(1)
            if it % max(1, cfg.log_every) == 0:
                flush()
            if sp.snapshot and it % sp.snapshot == 0:
                flush()
                snapshot(it)
            if stop.signum is not None:
                flush()
                snapshot(it)
                raise SystemExit(128 + stop.signum)
        flush()
        if sp.snapshot_after_train and not (sp.snapshot and it % sp.snapshot == 0):
            snapshot(it)
        if sp.test_interval and it % sp.test_interval == 0:
            metrics = validate(it)
    finally:
        bar.close()
        stop.restore()
        stream.close()
        if rank == 0 and os.path.exists(logs.paths["train"]):
            from .plots import plot_training
            plot_training(cfg.out, chance=1 / len(perms_np))
        if world > 1:
            dist.barrier()
            dist.destroy_process_group()
    return metrics
