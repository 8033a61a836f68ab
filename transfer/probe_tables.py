"""The probes' tables: per layer, the pretrained nets against their random-init twins (mean ± SE, the
twins' spread, the margin in standard errors), as rows for the CSV files and as text."""
import csv

import numpy as np

from tools.run.atomic import atomic_open


def mean_se(values):
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def pair(pretrained, random):
    """Pretrained scores (one per net) against the twins' scores: means, SEs, the twins' SD and range, and
    the margin in standard errors of the difference (the twins' SE alone for one pretrained net)."""
    p_mean, p_se = mean_se(pretrained)
    r_mean, r_se = mean_se(random)
    se = float(np.hypot(p_se, r_se))
    return dict(pretrained=round(p_mean, 4), pretrained_se=round(p_se, 4), pretrained_n=len(pretrained),
                random_mean=round(r_mean, 4), random_se=round(r_se, 4),
                random_sd=round(float(np.std(random, ddof=1)), 4) if len(random) > 1 else 0.0,
                random_min=round(float(min(random)), 4), random_max=round(float(max(random)), 4), n=len(random),
                margin_se=round((p_mean - r_mean) / se, 2) if se > 0 else None)


def layer_rows(scores, layers, tags, twins, dims):
    """One row per layer from scores[(net tag, layer)]."""
    return [dict(layer=layer, dims=dims[layer], **pair([scores[(t, layer)] for t in tags],
                                                       [scores[(t, layer)] for t in twins])) for layer in layers]


LINEAR_SELECTION = "cross-validation in the draw"
FEWEST_FOR_CV = 6  # labels per class below which 3 folds hold one or two per class: the CV choice is noise


def lowshot_rows(lowshot, full, layers, tags, twins, dims, n_classes):
    """label_efficiency.csv: per protocol, budget and layer, each net's mean over its draws (the same draws
    for every net, so the pairing is by draw) compared as `pair` does; the budget 'all' is the full-label
    probe (`full[protocol]`: scores by (tag, layer)) where it ran."""
    rows = []
    budgets = list(next(iter(lowshot.values()))[layers[0]]) if lowshot else []
    for protocol in ("linear", "knn", "prototype"):
        for budget in budgets + (["all"] if protocol in full and "all" not in budgets else []):
            for layer in layers:
                if budget == "all" and protocol == "prototype" and protocol not in full:
                    continue  # the full-label tables are the linear probe's and the kNN's
                if budget == "all" and protocol in full:
                    per_net = {t: [full[protocol][(t, layer)]] for t in tags + twins}
                    labels, selection = "", "validation split" if protocol == "linear" else ""
                else:
                    per_net = {t: [d[protocol] for d in lowshot[t][layer][budget]] for t in tags + twins}
                    labels = int(np.mean([d["labels"] for d in lowshot[tags[0]][layer][budget]]))
                    selection = dict(linear=LINEAR_SELECTION, prototype="nearest class mean").get(protocol, "")
                    if protocol == "linear" and labels / n_classes < FEWEST_FOR_CV:
                        selection = "few labels: decay by cross-validation on folds of 1-2 per class (prefer prototype)"
                draw_sd = np.mean([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in per_net.values()])
                rows.append(dict(protocol=protocol, budget=budget, labels=labels,
                                 per_class=round(labels / n_classes, 2) if labels else "", layer=layer,
                                 dims=dims[layer],
                                 draws=len(per_net[tags[0]]), draw_sd=round(float(draw_sd), 4), selection=selection,
                                 **pair([np.mean(per_net[t]) for t in tags], [np.mean(per_net[t]) for t in twins])))
    return rows


def format_table(rows, chance=None):
    """Rows of `layer_rows` (probe.csv, knn.csv) as the text table the command line and benchmarks print."""
    k = rows[0].get("pretrained_n", 1)
    head = f"pretrained (n={k})" if k > 1 else "pretrained"
    lines = [f"{'layer':8s} {'dims':>6s} {head:>20s} {'random (mean ± SE, n=' + str(rows[0]['n']) + ')':>26s} "
             f"{'twins SD':>8s} {'margin':>9s}"]
    for r in rows:
        p = f"{r['pretrained']:.4f} ± {r['pretrained_se']:.4f}" if k > 1 else f"{r['pretrained']:.4f}"
        margin = "" if r["margin_se"] is None else f"{r['margin_se']:+.1f} SE"
        lines.append(f"{r['layer']:8s} {r['dims']:6d} {p:>20s} {r['random_mean']:17.4f} ± {r['random_se']:.4f} "
                     f"{r.get('random_sd', 0):8.4f} {margin:>9s}")
    if chance is not None:
        lines.append(f"(chance {chance:.4f})")
    return "\n".join(lines)


def format_lowshot(rows):
    """label_efficiency.csv's rows as text: one line per protocol and budget, the margin in points and SE
    at each layer."""
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    lines = [f"{'protocol':8s} {'labels/class':>12s} " + " ".join(f"{layer:>17s}" for layer in layers)]
    for (protocol, budget) in dict.fromkeys((r["protocol"], r["budget"]) for r in rows):
        cells = []
        for layer in layers:
            r = next(r for r in rows if (r["protocol"], r["budget"], r["layer"]) == (protocol, budget, layer))
            points = 100 * (r["pretrained"] - r["random_mean"])
            se = "" if r["margin_se"] is None else f" {r['margin_se']:+.1f} SE"
            cells.append(f"{points:+6.1f} pt{se:>8s}")
        lines.append(f"{protocol:8s} {budget:>12s} " + " ".join(f"{c:>17s}" for c in cells))
    return "\n".join(lines)


def write_csv(path, rows):
    """Rows of dicts as a CSV, written atomically; nothing for no rows."""
    if not rows:
        return
    with atomic_open(path, "w") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
