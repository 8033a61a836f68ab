"""Behaviour unchanged by a refactor: a fixed-seed `jigsaw train` + `transfer finetune` + `transfer probe` on small
generated data, run by this tree's code and by another revision's (a git worktree), every output compared.

    python benchmarks/behaviour_check.py --out /tmp/same --against HEAD~3     # exit 0: identical

Both runs write in the same folder (OUT/run, renamed after each run to OUT/this and OUT/other), so the paths they
record and the probe's feature-cache names (digests of paths) agree. Compared: every tensor of every .pt and every
cached feature (bit for bit), every .caffemodel byte, every .csv row and every .json value with what a clock
decides left out (seconds, rates, dates, versions; the code's own folder written as <code>); not compared: PNGs
(matplotlib stamps them) and the text logs (their rates). A table of files,
identical or not, and the first difference of each file that differs."""
import argparse
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOLATILE = re.compile(r"(^|_)(time|seconds|s|sec|wall|elapsed|date|started|finished|version|versions|host|hostname|"
                      r"pid|per_s|puzzles_per_s|images_per_s|throughput|duration|when|torch|python|platform|stamp)($|_)|"
                      r"_s$|/s$", re.I)
SKIPPED = (".png", ".log", ".txt", ".lock")


def make_data(work):
    """40 seeded photographs-like JPEGs (a store's input) and a tiny Fashion-MNIST in its idx format."""
    import gzip
    import struct
    from PIL import Image
    rng = np.random.default_rng(0)
    photos = os.path.join(work, "photos")
    os.makedirs(photos, exist_ok=True)
    for i in range(40):
        base = rng.integers(0, 256, (3,))
        image = np.clip(base + rng.normal(0, 50, (300, 320, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(photos, f"{i:03d}.jpg"), quality=90)
    fmnist = os.path.join(work, "fmnist")
    os.makedirs(fmnist, exist_ok=True)
    templates = rng.integers(0, 256, (10, 28, 28))
    for stem, n in (("train", 300), ("t10k", 100)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = np.clip(0.5 * templates[labels] + rng.normal(64, 50, (n, 28, 28)), 0, 255).astype(np.uint8)
        for kind, head, body in (("images-idx3", struct.pack(">IIII", 0x803, n, 28, 28), images),
                                 ("labels-idx1", struct.pack(">II", 0x801, n), labels)):
            with open(os.path.join(fmnist, f"{stem}-{kind}-ubyte.gz"), "wb") as f:
                f.write(gzip.compress(head + body.tobytes(), mtime=0))
    return photos, fmnist


def pipeline(code, work):
    """The three commands, run by the code at `code`, writing under `work`."""
    photos, fmnist = make_data(work)

    def run(module, *args):
        cmd = [sys.executable, "-m", module, *map(str, args)]
        r = subprocess.run(cmd, cwd=code, capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=code, CUDA_VISIBLE_DEVICES=""))
        if r.returncode:
            raise SystemExit(f"{' '.join(cmd)} (in {code}) exited {r.returncode}:\n{r.stderr[-3000:]}")
    store, perms, pre = (os.path.join(work, n) for n in ("store.h5", "perms.npy", "pretrain"))
    run("jigsaw.cli", "prepare", photos, "-o", store, "--no-progress")
    run("jigsaw.cli", "permutations", "-n", 10, "-o", perms, "--seed", 3)
    run("jigsaw.cli", "train", "--data", store, "--permutations", perms, "--out", pre, "--max-iter", 6,
        "--batch-size", 8, "--width", 0.25, "--init", "msra", "--test-interval", 3, "--test-iter", 1, "--snapshot", 3,
        "--seed", 5, "--no-progress")
    run("transfer.cli", "finetune", "--dataset", "fashion-mnist", "--data-root", fmnist, "--model", "cfn", "--weights",
        os.path.join(pre, "last.pt"), "--out", os.path.join(work, "finetune"), "--epochs", 1, "--limit-train", 200,
        "--batch-size", 32, "--seed", 1, "--no-progress")
    run("transfer.cli", "probe", "--dataset", "fashion-mnist", "--data-root", fmnist, "--model", "cfn", "--weights",
        os.path.join(pre, "last.pt"), "--out", os.path.join(work, "probe"), "--random-seeds", 2, "--limit-train", 200,
        "--protocols", "knn", "--labels-per-class", 2, "--draws", 2, "--seed", 2, "--no-progress")


def _plain(value, work, code):
    """JSON-like data with volatile keys dropped, tensors as digests and the run's folders named alike."""
    import torch
    if isinstance(value, dict):
        return {str(k): _plain(v, work, code) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))
                if not VOLATILE.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [_plain(v, work, code) for v in value]
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        return f"tensor {t.dtype} {tuple(t.shape)} " + hashlib.sha256(t.view(torch.uint8).numpy().tobytes()
                                                                       if t.numel() else b"").hexdigest()[:16]
    if isinstance(value, np.ndarray):
        return f"array {value.dtype} {value.shape} " + hashlib.sha256(value.tobytes()).hexdigest()[:16]
    if isinstance(value, str):
        return value.replace(work, "<work>").replace(code, "<code>")
    return value


def digest(folder, work, code):
    """{relative path: comparable content} of every output under `folder` (written as `work`) but the inputs."""
    sys.path.insert(0, ROOT)
    from tools.run.checkpoint import load_checkpoint
    out = {}
    for part in ("pretrain", "finetune", "probe"):
        for base, _, names in os.walk(os.path.join(folder, part)):
            for name in sorted(names):
                path = os.path.join(base, name)
                rel = os.path.relpath(path, folder)
                if name.endswith(SKIPPED) or name.startswith(("events.", ".")):
                    continue
                if name.endswith(".pt"):
                    out[rel] = _plain(load_checkpoint(path), work, code)
                elif name.endswith(".json"):
                    with open(path) as f:
                        out[rel] = _plain(json.load(f), work, code)
                elif name.endswith(".csv"):
                    with open(path) as f:
                        out[rel] = [_plain(dict(row), work, code) for row in csv.DictReader(f)]
                elif name.endswith(".npy"):
                    out[rel] = _plain(np.load(path, allow_pickle=False), work, code)
                elif name.endswith(".prototxt"):
                    with open(path) as f:
                        out[rel] = _plain(f.read(), work, code)
                else:
                    with open(path, "rb") as f:
                        out[rel] = hashlib.sha256(f.read()).hexdigest()
    return _caches_by_net(folder, out)


def _caches_by_net(folder, out):
    """The probe's feature caches named by net (pretrained, random0, ...) instead of by a digest that includes the
    weights file's modification time: the same net in both runs, under the same name."""
    with open(os.path.join(folder, "probe", "config.json")) as f:
        named = {os.path.join("probe", cache): os.path.join("probe", "cache", net)
                 for net, cache in json.load(f)["features"].items()}
    renamed = {}
    for rel, value in out.items():
        cache = os.path.dirname(rel)
        renamed[os.path.join(named[cache], os.path.basename(rel)) if cache in named else rel] = value
    if isinstance(renamed.get("probe/config.json"), dict):
        renamed["probe/config.json"].pop("features", None)  # the names above say the same
    return renamed


def first_difference(a, b, where=""):
    if type(a) is not type(b):
        return f"{where}: {a!r:.80} vs {b!r:.80}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}/{k}: only in {'the other' if k not in a else 'this tree'}"
            found = first_difference(a[k], b[k], f"{where}/{k}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} items"
        return next((d for d in (first_difference(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))) if d),
                    None)
    return None if a == b else f"{where}: {a!r:.80} vs {b!r:.80}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="a folder for both runs")
    ap.add_argument("--against", default="HEAD", help="the revision to compare this tree with (default HEAD)")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    other = os.path.join(out, "code-" + re.sub(r"\W", "_", args.against))
    if not os.path.isdir(other):
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-f", other, args.against], check=True,
                       capture_output=True)
    runs = {"this tree": (ROOT, os.path.join(out, "this")), args.against: (other, os.path.join(out, "other"))}
    digests, shared = {}, os.path.join(out, "run")
    for name, (code, kept) in runs.items():
        if not os.path.isdir(os.path.join(kept, "probe")):
            shutil.rmtree(shared, ignore_errors=True)
            shutil.rmtree(kept, ignore_errors=True)
            os.makedirs(shared)
            pipeline(code, shared)
            os.rename(shared, kept)
        digests[name] = digest(kept, shared, code)
    mine, theirs = digests.values()
    rows, differ = [], 0
    for rel in sorted(set(mine) | set(theirs)):
        found = first_difference(mine.get(rel), theirs.get(rel)) if rel in mine and rel in theirs else \
            f"only in {'this tree' if rel in mine else args.against}"
        differ += found is not None
        rows.append(f"{'same' if found is None else 'DIFFERS':8s} {rel}" + (f"   {found}" if found else ""))
    buffer = io.StringIO()
    print(f"this tree ({ROOT}) against {args.against}: {len(rows)} files, {differ} differ", file=buffer)
    print("\n".join(rows), file=buffer)
    print(buffer.getvalue())
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
