"""The corruption fuzzer: mutated copies of real files (fuzz_corpus.READERS), each read by the project's reader in
a forked child with an address-space limit (its VM at the start + the reader's allowance + 16 x the file's size)
and a CPU-time limit. A case passes when the reader returns or raises the project's one-line error; another
exception, a signal, running out of CPU or memory, or a hang fails it.

    python -m tests.reliability.fuzz_files --cases 12000 [--seed S] [--only READER ...]

prints the table of cases, read, refused and time per reader (benchmarks/RESULTS.md keeps one) and every failure
with the seed and case that replay it.
"""
import argparse
import gzip
import json
import os
import re
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from tests.reliability.fuzz_corpus import READERS

MEMORY_PER_FILE_BYTE = 16
CPU_SECONDS = 20  # far above any reader's time on these small files: only a runaway loop reaches it
BLOCKED_SECONDS = 300  # a child that neither uses CPU nor ends (blocked on something) is stopped here
EXTREMES = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff", b"\x7f\xff", b"\x80\x00", b"\xff\xff\xff\xff",
            b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
            b"\xff" * 8, b"\x7f" + b"\xff" * 7, b"\x80" + b"\x00" * 7, b"\xff" * 7 + b"\x7f", b"\x00" * 8,
            b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f"]  # the last: a varint declaring ~2^63
TEXT_EXTREMES = ["-1", "0", "-0", "99999999999999999999999", "4294967296", "2147483648", "-2147483649", "1e309",
                 "-1e309", "nan", "inf", "1e-320", "0x7fffffff", "18446744073709551616", "3.5", "\"\"", "[]",
                 "{}", "null", "9" * 400]


# --- mutations -------------------------------------------------------------------------------------------------

def _position(rng, n):
    """Headers sit in front: half the positions fall in the first 512 bytes."""
    if n == 0:
        return 0
    return int(rng.integers(0, min(n, 512))) if rng.random() < 0.5 else int(rng.integers(0, n))


def mutate_bytes(data: bytes, rng) -> (bytes, str):
    b = bytearray(data)
    kind = rng.choice(["flip", "truncate", "insert", "delete", "duplicate", "extreme", "zero"])
    n = len(b)
    if kind == "flip" or n == 0:
        flips = [(_position(rng, max(n, 1)), int(rng.integers(0, 8))) for _ in range(int(rng.integers(1, 9)))]
        for pos, bit in flips:
            if pos < len(b):
                b[pos] ^= 1 << bit
        return bytes(b), f"flip bits {flips}"
    if kind == "truncate":
        at = int(rng.integers(0, n))
        return bytes(b[:at]), f"truncate at {at}"
    if kind == "insert":
        at, run = _position(rng, n + 1), bytes(rng.integers(0, 256, int(rng.integers(1, 65)), dtype=np.uint8))
        return bytes(b[:at] + run + b[at:]), f"insert {len(run)} bytes at {at}"
    if kind == "delete":
        at, length = _position(rng, n), int(rng.integers(1, 65))
        return bytes(b[:at] + b[at + length:]), f"delete {length} bytes at {at}"
    if kind == "duplicate":
        start, length, at = int(rng.integers(0, n)), int(rng.integers(1, 257)), _position(rng, n + 1)
        return bytes(b[:at] + b[start:start + length] + b[at:]), f"duplicate {start}+{length} at {at}"
    if kind == "extreme":
        value, at = EXTREMES[int(rng.integers(len(EXTREMES)))], _position(rng, n)
        b[at:at + len(value)] = value
        return bytes(b), f"write {value.hex()} at {at}"
    at, length = _position(rng, n), int(rng.integers(1, 33))
    b[at:at + length] = bytes(len(b[at:at + length]))
    return bytes(b), f"zero {length} bytes at {at}"


def mutate_text(data: bytes, rng) -> (bytes, str):
    text = data.decode("utf-8", "surrogateescape")
    kind = rng.choice(["number", "line-delete", "line-duplicate", "junk", "swap-fields"])
    if kind == "number":
        spots = [m.span() for m in re.finditer(r"-?\d+(\.\d+)?(e-?\d+)?", text)]
        if spots:
            a, z = spots[int(rng.integers(len(spots)))]
            value = TEXT_EXTREMES[int(rng.integers(len(TEXT_EXTREMES)))]
            return (text[:a] + value + text[z:]).encode("utf-8", "surrogateescape"), f"number at {a} -> {value[:20]}"
    lines = text.splitlines(keepends=True)
    if lines and kind in ("line-delete", "line-duplicate"):
        k = int(rng.integers(len(lines)))
        lines = lines[:k] + lines[k + 1:] if kind == "line-delete" else lines[:k + 1] + [lines[k]] + lines[k + 1:]
        return "".join(lines).encode("utf-8", "surrogateescape"), f"{kind} {k + 1}"
    if lines and kind == "swap-fields":
        k = int(rng.integers(len(lines)))
        parts = lines[k].split()
        lines[k] = " ".join(reversed(parts)) + "\n"
        return "".join(lines).encode("utf-8", "surrogateescape"), f"swap fields of line {k + 1}"
    junk = rng.choice(["{", "}", "[", "\"", ":", "\x00", "\xff", "#", "\n", " ", "a", "é", "\t", "{" * 200,
                       "- - -", "&a *a", "!!python/object:os.system", "\\"])
    at = int(rng.integers(0, len(text) + 1))
    return (text[:at] + junk + text[at:]).encode("utf-8", "surrogateescape"), f"insert {junk[:10]!r} at {at}"


def mutate(name: str, data: bytes, target: str, rng) -> (bytes, str):
    reader = READERS[name]
    steps = int(rng.integers(1, 4))
    said = []
    inner = reader.gz_inner and target.endswith(".gz") and rng.random() < 0.5
    if inner:  # reach the content's header: damage what the .gz holds, then compress it again
        data = gzip.decompress(data)
    for _ in range(steps):
        data, what = (mutate_text if reader.text and rng.random() < 0.6 else mutate_bytes)(data, rng)
        said.append(what)
    if inner:
        data = gzip.compress(data, mtime=0)
    return data, ("inside the .gz: " if inner else "") + "; ".join(said)


# --- the forked, limited child ---------------------------------------------------------------------------------

def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(name: str, root: str, file_bytes: int, out_fd: int) -> int:
    from tools.run.errors import UserError
    reader = READERS[name]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 2))
    resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + reader.allowance + MEMORY_PER_FILE_BYTE * file_bytes,
                                            resource.RLIM_INFINITY))
    if "torch" in sys.modules:  # a forked child must not wake the parent's thread pool
        sys.modules["torch"].set_num_threads(1)
    log = os.open(os.path.join(root, "..", "child.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    import faulthandler
    faulthandler.register(signal.SIGXCPU, all_threads=True)  # where a runaway loop spins, into the log
    import warnings
    warnings.simplefilter("ignore")
    try:
        reader.read(root)
        result = dict(outcome="read")
    except UserError as e:
        text = str(e)
        result = dict(outcome="refused", message=text) if "\n" not in text and text.strip() else \
            dict(outcome="failed", kind="UserError of more than one line", message=text[:2000])
    except BaseException as e:  # noqa: B902 (the fuzzer reports every other exception as the failure it is)
        result = dict(outcome="failed", kind=type(e).__name__, message=str(e)[:500],
                      traceback="".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:])
    os.write(out_fd, json.dumps(result).encode())
    return 0


def run_case(name: str, root: str, file_bytes: int) -> dict:
    """Read `root` with reader `name` in a forked child; the outcome as a dict (outcome: read, refused, failed)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's stack
        code = 1
        try:
            os.close(r)
            code = _child(name, root, file_bytes, w)
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], BLOCKED_SECONDS)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return dict(outcome="failed", kind="hang", message=f"no end after {BLOCKED_SECONDS} s")
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status))
        why = "over the CPU-time limit: a runaway loop" if sig in (signal.SIGXCPU, signal.SIGKILL) else \
            "killed by a signal"
        return dict(outcome="failed", kind=sig.name, message=why, log=_log(root))
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return dict(outcome="failed", kind="no result", message=f"exit status {os.WEXITSTATUS(status)}",
                    log=_log(root))


def _log(root):
    try:
        with open(os.path.join(root, "..", "child.log"), errors="replace") as f:
            return f.read()[-2000:]
    except OSError:
        return ""


# --- the campaign ------------------------------------------------------------------------------------------------

@dataclass
class Tally:
    cases: int = 0
    read: int = 0
    refused: int = 0
    seconds: float = 0.0
    failures: List[dict] = field(default_factory=list)


def seeds(folder: str, names) -> Dict[str, tuple]:
    """Each reader's seed tree, written once: {name: (root, targets)}. Every seed is read here, in this process:
    it must read cleanly, and what the reader imports is then loaded before any child is forked."""
    import warnings
    made = {}
    for name in names:
        where = os.path.join(folder, name)
        os.makedirs(where)
        root, targets = READERS[name].make(where)
        made[name] = (root, targets)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            READERS[name].read(root)
    return made


def campaign(cases: int, seed: int, folder: str, only=None, progress=None) -> Dict[str, Tally]:
    """`cases` mutated files spread evenly over the readers (`only`: some of them), seeded by `seed`."""
    names = list(only or READERS)
    made = seeds(os.path.join(folder, "seeds"), names)
    tallies = {n: Tally() for n in names}
    for k in range(cases):
        name = names[k % len(names)]
        tallies[name].cases += 1
        case_failed = replay(name, made[name], seed, k, os.path.join(folder, "case"), tallies[name])
        if case_failed and progress:
            progress(case_failed)
    return tallies


def replay(name: str, made: tuple, seed: int, k: int, work: str, tally: Optional[Tally] = None) -> Optional[dict]:
    """Case k of a campaign seeded `seed` (the same mutation every time); the failure as a dict, or None."""
    rng = np.random.default_rng([seed, k])
    root, targets = made
    shutil.rmtree(work, ignore_errors=True)
    case_root = os.path.join(work, "tree")
    shutil.copytree(root, case_root)
    target = targets[int(rng.integers(len(targets)))]
    with open(os.path.join(root, target), "rb") as f:
        data, what = mutate(name, f.read(), target, rng)
    with open(os.path.join(case_root, target), "wb") as f:
        f.write(data)
    start = time.perf_counter()
    outcome = run_case(name, case_root, len(data))
    if tally is not None:
        tally.seconds += time.perf_counter() - start
        tally.read += outcome["outcome"] == "read"
        tally.refused += outcome["outcome"] == "refused"
    if outcome["outcome"] != "failed":
        return None
    failure = dict(reader=name, seed=seed, case=k, file=target, mutation=what, **outcome)
    if tally is not None:
        tally.failures.append(failure)
    return failure


def describe(failure: dict) -> str:
    return (f"{failure['reader']} case {failure['case']} (seed {failure['seed']}): {failure['file']} damaged by "
            f"[{failure['mutation']}] -> {failure['kind']}: {failure['message']}\n"
            f"  replay: python -m tests.reliability.fuzz_files --seed {failure['seed']} --replay "
            f"{failure['reader']}:{failure['case']}\n" + failure.get("traceback", "") + failure.get("log", ""))


def table(tallies: Dict[str, Tally]) -> str:
    rows = ["| reader | cases | read | refused | failed | s |", "|---|---:|---:|---:|---:|---:|"]
    for name, t in tallies.items():
        rows.append(f"| {name} | {t.cases} | {t.read} | {t.refused} | {len(t.failures)} | {t.seconds:.1f} |")
    total = Tally(sum(t.cases for t in tallies.values()), sum(t.read for t in tallies.values()),
                  sum(t.refused for t in tallies.values()), sum(t.seconds for t in tallies.values()))
    failed = sum(len(t.failures) for t in tallies.values())
    rows.append(f"| **all** | {total.cases} | {total.read} | {total.refused} | {failed} | {total.seconds:.1f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12000, help="mutated files in all (spread over the readers)")
    parser.add_argument("--seed", type=int, default=None, help="the campaign's seed (default: a new one)")
    parser.add_argument("--only", nargs="*", choices=sorted(READERS), help="some readers only")
    parser.add_argument("--replay", help="READER:CASE: run that one case of --seed, and show it")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    with tempfile.TemporaryDirectory() as folder:
        if args.replay:
            name, k = args.replay.rsplit(":", 1)
            made = seeds(os.path.join(folder, "seeds"), [name])
            failure = replay(name, made[name], seed, int(k), os.path.join(folder, "case"))
            print(describe(failure) if failure else f"{args.replay} (seed {seed}): passes")
            return 1 if failure else 0
        print(f"seed {seed}, {args.cases} cases over {len(args.only or READERS)} readers", flush=True)
        start = time.perf_counter()
        tallies = campaign(args.cases, seed, folder, args.only, progress=lambda f: print(describe(f), flush=True))
        print(table(tallies))
        print(f"wall {time.perf_counter() - start:.0f} s")
    return 1 if any(t.failures for t in tallies.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
