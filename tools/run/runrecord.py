"""A run folder's record of its settings (config.json), read back by `--resume`: which settings a resumed
run must keep, which it may change, and `--resume auto` for jobs that are restarted blindly."""
import json
import os
from typing import Any, Dict, Iterable, Optional

from .decoding import decoding
from .errors import UserError
from .paths import user_file

RESUME_CHOICES = ("yes", "auto")
MAX_RECORD_BYTES = 1 << 20  # a config.json is a few hundred bytes; a cut read of a larger file fails to parse
RESUME_HELP = ("continue the run in --out with the settings its config.json recorded; options given override "
               "those that may change (a record of each resume is written beside config.json). 'auto': resume "
               "if there is something to resume, else start (for preemptible jobs)")


def wants_resume(value: Any, has_state: bool) -> bool:
    """--resume (True or 'yes') resumes, '--resume auto' resumes when the folder has a run's state."""
    if value == "auto":
        return has_state
    if value in (None, False, "", "no"):
        return False
    if value in (True, "yes"):
        return True
    raise UserError(f"--resume {value!r}: expected no value or 'auto'")


def read_json(path: str, what: str, limit: int = MAX_RECORD_BYTES) -> Dict[str, Any]:
    """A JSON object a run wrote (config.json, summary.json), read back bounded; damaged, it is one line."""
    user_file(path, what.removeprefix("a ").removeprefix("an "))
    with decoding(path, "json", what), open(path, "rb") as f:
        value = json.loads(f.read(limit + 1))
    if not isinstance(value, dict):
        raise UserError(f"{path}: not {what} (a JSON object)")
    return value


def read_record(out: str, fields: Optional[Iterable[str]], machine: Iterable[str] = ()) -> Dict[str, Any]:
    """The settings a run folder's config.json recorded, restricted to `fields` (all with None) and without
    the `machine` ones (a run started on a GPU resumes on whatever is here); {} when there is none."""
    path = os.path.join(out, "config.json")
    if not os.path.exists(path):
        return {}
    record = read_json(path, "a readable run record")
    keep, drop = set(record if fields is None else fields), set(machine)
    return {k: v for k, v in record.items() if k in keep and k not in drop}


def _same(a, b) -> bool:
    # JSON turns tuples into lists and may turn 1.0 into 1: compare the values, not their containers
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def check_fixed(cfg: Any, recorded: Dict[str, Any], out: str, fixed: Iterable[str]) -> None:
    """One line, before anything is written, when `cfg` changes a setting the run in `out` fixed."""
    for field in fixed:
        if field in recorded and not _same(recorded[field], getattr(cfg, field)):
            raise UserError(f"{os.path.join(out, 'config.json')}: the run was started with {field} "
                            f"{recorded[field]!r}; resuming with {getattr(cfg, field)!r} would change it "
                            f"(start a new --out, or resume without --{field.replace('_', '-')})")


def changes(cfg: Any, recorded: Dict[str, Any], fields: Iterable[str]) -> Dict[str, Any]:
    """The recorded settings that `cfg` changes, as {field: [was, now]} (what a resume record lists)."""
    return {f: [recorded[f], getattr(cfg, f)] for f in fields
            if f in recorded and not _same(recorded[f], getattr(cfg, f))}
