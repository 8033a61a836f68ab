"""Caffe's objective: which tops it weighs, by how much, and where (net.cpp, util/insert_splits.cpp)."""
from typing import Any, Dict, List, Tuple

from ..run.errors import CaffeError


def loss_weights_of(lp: Any, path: str) -> List[float]:
    """One weight per top: `loss_weight` given once per top, or 1 for a loss layer's first top."""
    if lp.loss_weight:
        if len(lp.loss_weight) != len(lp.top):
            raise CaffeError(f"{path}: layer '{lp.name}' gives loss_weight {len(lp.loss_weight)} time(s); "
                             f"Caffe needs it unspecified or once per top ({len(lp.top)})")
        return list(lp.loss_weight)
    return [1.0 if i == 0 and lp.type.endswith("Loss") else 0.0 for i in range(len(lp.top))]


def split_counts(plan: List[Tuple[str, List[str], List[str]]], given: List[Tuple[List[float], bool, bool]]
                 ) -> Dict[Tuple[int, int], int]:
    """{(layer, top): readers} as util/insert_splits.cpp counts them: the later bottoms that read that top,
    plus one for an explicit, nonzero loss weight on it. Caffe puts a Split after any top read twice."""
    last, counts = {}, {}
    for i, (_, bottoms, tops) in enumerate(plan):
        for b in bottoms:
            if b in last:
                counts[last[b]] = counts.get(last[b], 0) + 1
        last.update({t: (i, j) for j, t in enumerate(tops)})
        weights, explicit, _ = given[i]
        for j, w in enumerate(weights):
            if explicit and w:
                counts[(i, j)] = counts.get((i, j), 0) + 1
    return counts


def check_sources(plan: List[Tuple[str, List[str], List[str]]], counts: Dict[Tuple[int, int], int],
                  names: List[str], path: str) -> None:
    """net.cpp AppendTop: a top name made twice is refused, unless it is an in-place top (its bottom at
    the same index) and that bottom was not split; after a Split the in-place layer reads a split blob
    and its top is a second source ("Top blob '...' produced by multiple sources")."""
    last = {}
    for i, (_, bottoms, tops) in enumerate(plan):
        for j, t in enumerate(tops):
            in_place = j < len(bottoms) and bottoms[j] == t
            if t in last and not (in_place and counts.get(last[t], 0) <= 1):
                why = ("its bottom is also read by another layer or carries a loss weight, so Caffe splits it"
                       if in_place else "an earlier layer makes it")
                raise CaffeError(f"{path}: layer '{names[i]}' makes top '{t}' in place, but {why}: Caffe "
                                 f"refuses a top with two sources" if in_place else
                                 f"{path}: layer '{names[i]}' makes top '{t}', which {why}: Caffe refuses a top "
                                 "with two sources (give it another name)")
        last.update({t: (i, j) for j, t in enumerate(tops)})


def place_loss_weights(plan: List[Tuple[str, List[str], List[str]]], given: List[Tuple[List[float], bool, bool]],
                       counts: Dict[Tuple[int, int], int]
                       ) -> Tuple[List[Tuple[str, float]], Dict[int, List[Tuple[int, float]]]]:
    """((top, weight) list, {plan index: [(top index, weight)]}) for the layers of `plan`, each given as
    (its weights, whether the prototxt gave them, whether it is a loss layer). util/insert_splits.cpp: a top
    with an explicit loss weight that another layer also reads gets a Split carrying that weight, and the
    layer's own weights are all cleared. (A loss layer then sets its default weight again, but the Split's
    backward overwrites that top's diff: the gradient knows only the Split's weights.)"""
    weights_of, at = [], {}
    for i, ((_, _, tops), (weights, explicit, _)) in enumerate(zip(plan, given)):
        split = [j for j, w in enumerate(weights) if explicit and w and counts.get((i, j), 0) > 1]
        if split:
            weights = [weights[j] if j in split else 0.0 for j in range(len(tops))]
        for j, w in enumerate(weights):
            if w:
                weights_of.append((tops[j], w))
                at.setdefault(i, []).append((j, w))
    return weights_of, at
