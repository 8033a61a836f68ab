"""`transfer compare`: finished fine-tune runs of pretrained weights against runs of their random-init
twins (`--twin-seed`), per label budget: test accuracy mean ± SE and the margin in SE."""
import os

from tools.run.errors import UserError
from tools.run.folder import RunFolder
from tools.run.runrecord import read_json

from .probe_tables import pair


def _run(folder):
    config = RunFolder(folder, "transfer run").read()
    summary_path = os.path.join(folder, "summary.json")
    for name, missing in (("config.json", not config), ("summary.json", not os.path.exists(summary_path))):
        if missing:
            raise UserError(f"{folder}: not a finished transfer run (no {name})")
    summary = read_json(summary_path, "a run summary (summary.json)")
    if not isinstance(summary.get("test_accuracy"), (int, float)):
        raise UserError(f"{summary_path}: not a run summary (no test_accuracy number)")
    return config, float(summary["test_accuracy"])


def compare(folders):
    """Rows per label budget: pretrained runs (no twin seed) against twin runs, as `pair` gives them."""
    groups = {}
    for folder in folders:
        config, accuracy = _run(folder)
        same = (config.get("dataset"), config.get("model"), config.get("phase"), config.get("labels_per_class"))
        groups.setdefault(same, {"pretrained": [], "random": []})[
            "random" if config.get("twin_seed") is not None else "pretrained"].append(accuracy)
    rows = []
    for (dataset, model, phase, budget), got in groups.items():
        if not got["pretrained"] or len(got["random"]) < 2:
            raise UserError(f"{dataset} {model} {phase} labels per class {budget or 'all'}: "
                            f"{len(got['pretrained'])} pretrained and {len(got['random'])} twin runs; need at "
                            "least 1 and 2 (a standard error)")
        rows.append(dict(dataset=dataset, model=model, phase=phase, labels_per_class=budget or "all",
                         **pair(got["pretrained"], got["random"])))
    return rows


def format_compare(rows):
    lines = [f"{'dataset':14s} {'labels/class':>12s} {'pretrained':>18s} {'random twins':>18s} {'margin':>9s}"]
    for r in rows:
        margin = "" if r["margin_se"] is None else f"{r['margin_se']:+.1f} SE"
        lines.append(f"{r['dataset']:14s} {r['labels_per_class']:>12s} "
                     f"{r['pretrained']:.4f} ± {r['pretrained_se']:.4f} (n={r['pretrained_n']}) "
                     f"{r['random_mean']:.4f} ± {r['random_se']:.4f} (n={r['n']}) {margin:>9s}")
    return "\n".join(lines)
