"""Frozen features for the probes: each probed layer's activations (after the ReLU for a CFN branch),
average-pooled to about `target_dim` values, written once per net to its cache folder (float16) and read
back from it; a file lost, truncated or damaged is extracted again."""
import contextlib
import errno
import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tools.run.atomic import atomic_open
from tools.run.errors import DiskError


def pooled(t, target_dim):
    """(N, C, H, W) -> average-pooled to a g x g grid with C*g*g about target_dim; (N, D) as is."""
    if t.dim() == 2:
        return t
    if t.dim() == 3:  # (N, positions, D): a fully connected layer slid over a square map (fc6 on a large image)
        n, positions, d = t.shape
        side = int(round(positions ** 0.5))
        t = t.transpose(1, 2).reshape(n, d, side, side)
    c, h = t.shape[1], t.shape[2]
    g = int(min(h, max(1, round((target_dim / c) ** 0.5))))
    return F.adaptive_avg_pool2d(t, g).flatten(1)


def stamp(path):
    """Size and mtime of a weights file (None for 'none' or a name): a rewritten file is a new one."""
    try:
        st = os.stat(path)
        return [st.st_size, st.st_mtime_ns]
    except (OSError, TypeError):
        return None


def _probe_points(backbone, model_name):
    """(layer name, module, ReLU after it?) for each probed layer."""
    if model_name == "cfn":
        return [(b, backbone.block(b), True) for b in backbone.blocks]
    return [(b, backbone.block(b), False) for b in backbone.blocks]


def _load_features(paths, data):
    """The cached arrays if every one is there, readable and of the split's length; None means extract
    again (a file lost, truncated or damaged is not an error the user must mend by hand)."""
    try:
        arrays = {k: np.load(p, mmap_mode="r") for k, p in paths.items()}
    except (OSError, ValueError, EOFError):
        return None
    for (layer, split), a in arrays.items():
        n = len(data[split].dataset)
        if a.shape[0] != n or a.ndim != 2 and (layer != "labels" or a.ndim != 1):  # labels: (N,) or (N, classes)
            return None
    return arrays


@contextlib.contextmanager
def _cache_writes(path):
    """A write to the feature cache that the disk refuses: one line, and the same command continues."""
    try:
        yield
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(path + ".tmp.npy")  # the half-written cache; the final name never held it
        raise DiskError(f"{path}: cannot write the feature cache ({e.strerror or e}); free space and run the same "
                        "command again (the caches already written are reused)") from None


def _new_cache(path, shape):
    """A float16 .npy memmap at `path`, its blocks reserved now: a full disk is one line here rather than a
    SIGBUS when the mapped pages are written."""
    with _cache_writes(path[:-len(".tmp.npy")]):
        array = np.lib.format.open_memmap(path, "w+", np.float16, shape)
        with open(path, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system that cannot reserve
                    raise
        return array


def has_batchnorm(module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


@torch.no_grad()
def reestimate_batchnorm(backbone, loader, device, images, progress=False):
    """Every BatchNorm's running mean and variance measured afresh on the first `images` of `loader` (unlabelled
    training images at the probe's input size), as a cumulative average; the rest of the net in eval mode. A
    random twin's 0/1 statistics would leave it unnormalised, and a pretrained trunk's are those of its tiles."""
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    backbone.eval().to(device)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative: every batch weighs by its count of batches
        m.train()
    seen = 0
    for x, _ in tqdm(loader, desc="BatchNorm statistics", disable=not progress, leave=False):
        x = x[:images - seen]
        backbone.features(x.to(device))
        seen += len(x)
        if seen >= images:
            break
    backbone.eval()


@torch.no_grad()
def extract(backbone, model_name, data, cache, tag, cfg, device):
    """Features of every probed layer for every split, written once to CACHE/LAYER_SPLIT.npy (one folder
    per net)."""
    points = _probe_points(backbone, model_name)
    paths = {(layer, split): os.path.join(cache, f"{layer}_{split}.npy")
             for layer, _, _ in points for split in data}
    paths.update({("labels", split): os.path.join(cache, f"labels_{split}.npy") for split in data})
    kept = _load_features(paths, data)
    if kept is not None:
        return kept
    from tools.run.runtime import autocast, use_bf16
    fast = use_bf16(cfg.precision, device)
    if cfg.bn_images and has_batchnorm(backbone):
        reestimate_batchnorm(backbone, data["train"], device, cfg.bn_images, cfg.progress)
    backbone.eval().to(device)
    grabbed = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=name, relu=relu:
                                     grabbed.__setitem__(name, F.relu(out) if relu else out))
             for name, m, relu in points]
    try:
        for split, loader in data.items():
            arrays, n, start, ys = {}, len(loader.dataset), 0, []
            for x, y in tqdm(loader, desc=f"features {tag} {split}", disable=not cfg.progress, leave=False):
                ys.append(y)
                with autocast(device, fast):
                    backbone.features(x.to(device))
                for layer, _, _ in points:
                    f = pooled(grabbed[layer].float(), cfg.target_dim).cpu().numpy()
                    if layer not in arrays:
                        arrays[layer] = _new_cache(paths[(layer, split)] + ".tmp.npy", (n, f.shape[1]))
                    arrays[layer][start:start + len(f)] = f
                start += len(x)
            for layer, a in arrays.items():
                with _cache_writes(paths[(layer, split)]):
                    a.flush()
                    os.replace(paths[(layer, split)] + ".tmp.npy", paths[(layer, split)])
            with atomic_open(paths[("labels", split)], "wb") as f:  # what the loader gave, in order
                np.save(f, torch.cat(ys).numpy())
    finally:
        for h in hooks:
            h.remove()
    return {k: np.load(p, mmap_mode="r") for k, p in paths.items()}
