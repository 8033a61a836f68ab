"""The CFN checkpoint: what `jigsaw train` and `jigsaw convert` write, and the one reader that evaluate,
convert, the demo and transfer's CFN backbone use (a checkpoint .pt or an original CFN .caffemodel)."""
from typing import Optional, Tuple

import numpy as np
import torch

from tools.run.checkpoint import load_checkpoint
from tools.run.errors import UserError

from .caffe_form import from_caffe
from .cfn import CFN
from .permutations import load_permutations
from .recipes import DEFAULT, PuzzleConfig, recipe, recipe_of


def cfn_payload(model: CFN, permutations: Optional[np.ndarray], record: dict, iteration: int = 0,
                solver: Optional[dict] = None, seed: Optional[int] = None) -> dict:
    """The checkpoint dict: weights, widths, permutation set (empty when unknown), iteration, the
    recipe record (recipes.recipe_record) and, from training, the solver state and seed."""
    perms = torch.from_numpy(np.asarray(permutations)) if permutations is not None and len(permutations) \
        else torch.zeros(0, 9, dtype=torch.long)
    payload = dict(model=model.state_dict(), widths=model.widths, iter=iteration, permutations=perms, **record)
    if solver is not None:
        payload["solver"] = solver
    if seed is not None:
        payload["seed"] = seed
    return payload


def is_cfn_checkpoint(ck) -> bool:
    """A loaded checkpoint is a CFN's (`jigsaw train` / `jigsaw convert`), not a `transfer` run's model.pt."""
    return isinstance(ck, dict) and "permutations" in ck and "widths" in ck


def cfn_iteration(path: str) -> int:
    """The training iteration a CFN checkpoint holds."""
    ck = load_checkpoint(path)
    if not is_cfn_checkpoint(ck):
        raise UserError(f"{path}: not a CFN checkpoint written by `jigsaw train`")
    return int(ck["iter"])


def run_iteration(path: str) -> int:
    """The training iteration a `jigsaw train` checkpoint holds, the CFN's or a trunk run's."""
    ck = load_checkpoint(path)
    if not (is_cfn_checkpoint(ck) or is_trunk_checkpoint(ck)):
        raise UserError(f"{path}: not a checkpoint written by `jigsaw train`")
    return int(ck["iter"])


def resume_into(path: str, model: CFN, permutations: np.ndarray, pcfg: PuzzleConfig, recipe_name: str,
                recipe_options: dict) -> Tuple[dict, int]:
    """Load a run's last.pt into `model` for `--resume`: the same CFN, permutations and recipe, or one line
    saying what differs. Returns (the solver's state, the iteration)."""
    ck = load_checkpoint(path)
    if not is_cfn_checkpoint(ck):
        raise UserError(f"{path}: not a CFN checkpoint written by `jigsaw train`")
    if dict(ck.get("widths") or {}) != model.widths or ck["model"]["fc6.weight"].shape != model.fc6.weight.shape:
        raise UserError(f"{path}: the checkpoint's CFN (widths {dict(ck.get('widths') or {})}, fc6 "
                        f"{tuple(ck['model']['fc6.weight'].shape)}) is not the one these settings build "
                        f"(widths {model.widths}, fc6 {tuple(model.fc6.weight.shape)})")
    if not np.array_equal(ck["permutations"].numpy(), permutations):
        raise UserError(f"{path}: the checkpoint was trained with another permutation set")
    was = recipe_of(ck)
    if was != pcfg:
        raise UserError(f"{path}: the run was trained with recipe '{was.recipe}' "
                        f"{dict(ck.get('recipe_options') or {})}; --recipe {recipe_name} "
                        f"{recipe_options} would change what its puzzles are")
    model.load_state_dict(ck["model"])
    return ck["solver"], int(ck["iter"])


def cfn_from_checkpoint(ck: dict, path: str) -> CFN:
    """The CFN a checkpoint holds: widths, permutation count and tile size (its recipe's grid) from the
    record, then the weights; one line if they do not fit."""
    if is_trunk_checkpoint(ck):
        raise UserError(f"{path}: a `jigsaw train --trunk {ck['trunk']}` checkpoint, not a CFN's (transfer reads it "
                        f"with --model {ck['trunk']}; `jigsaw convert` writes its torchvision state_dict)")
    if not isinstance(ck, dict) or "model" not in ck or "widths" not in ck or "fc8.weight" not in ck["model"]:
        raise UserError(f"{path}: not a CFN checkpoint written by `jigsaw train`")
    model = CFN(ck["model"]["fc8.weight"].shape[0], width=dict(ck["widths"]), tile=recipe_of(ck).tile)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise UserError(f"{path}: the weights do not fit the CFN its record describes "
                        f"({str(e).splitlines()[-1].strip()[:200]})") from None
    return model


def caffemodel_recipe(weights: str, given: Optional[str] = None) -> dict:
    """The recipe record of a .caffemodel: `given` (--recipe), else what the train_val beside it says (our header,
    or the fork's data layers), else jps, the original release's; `recipe_source` says which."""
    from .caffe_recipe import recipe_in, train_val_beside
    beside, unread = train_val_beside(weights), ""
    try:
        found = recipe_in(beside) if beside else None
    except UserError as e:  # a neighbour that does not parse or says nonsense: said, and not taken
        found, unread = None, f"{beside} was not read: {e}"
    if given:
        differs = f"; {beside} says {found[0]}" if found and found[0] != given else ""
        options = found[1] if found and found[0] == given else {}
        return dict(recipe=given, recipe_options=options, recipe_source=f"given (--recipe){differs}")
    if found:
        return dict(recipe=found[0], recipe_options=found[1], recipe_source=f"read from {beside}")
    why = unread or (f"{beside} does not say which" if beside else "no train_val prototxt beside it")
    return dict(recipe=DEFAULT, recipe_options={},
                recipe_source=f"assumed: the original release's ({why}; give --recipe)")


def read_cfn(weights: str, permutations: Optional[str] = None, recipe_name: Optional[str] = None,
             prototxt: Optional[str] = None) -> Tuple[CFN, np.ndarray, PuzzleConfig, dict]:
    """(CFN in eval mode, permutations (possibly empty), PuzzleConfig, record) from a checkpoint .pt
    (its recorded recipe; `recipe_name` must agree) or a .caffemodel (`recipe_name`, default jps, the
    original release's; `prototxt`, its net, is checked against it). `permutations` (a file) replaces
    or supplies the set; counts must agree."""
    if str(weights).endswith(".caffemodel"):
        model = from_caffe(prototxt, weights)
        record = caffemodel_recipe(weights, recipe_name)
        pcfg = recipe(record["recipe"], **record["recipe_options"])
        perms = np.zeros((0, 9), dtype=np.int64)
    else:
        ck = load_checkpoint(weights)
        model = cfn_from_checkpoint(ck, weights)
        pcfg = recipe_of(ck)
        if recipe_name and recipe_name != pcfg.recipe:
            raise UserError(f"{weights}: trained with recipe '{pcfg.recipe}', not '{recipe_name}'")
        record = dict(recipe=pcfg.recipe, recipe_options=dict(ck.get("recipe_options") or {}),
                      recipe_source=str(weights))
        perms = ck["permutations"].numpy()
    if permutations:
        perms = load_permutations(permutations)
    if len(perms) and len(perms) != model.num_permutations:
        raise UserError(f"{permutations or weights}: {len(perms)} permutations, but the weights predict "
                        f"{model.num_permutations}")
    return model.eval(), perms, pcfg, record


# ---- runs on a torchvision trunk (`jigsaw train --trunk resnet18 ...`, `--method pirl`) ---------------------------

def trunk_payload(cfg, model, permutations: np.ndarray, record: dict, iteration: int, solver: dict,
                  method_state: dict, input_size: int) -> dict:
    """A trunk run's checkpoint: the whole net (trunk under `trunk.net.`, torchvision's names), what builds it
    (trunk, width, method), the permutations (jigsaw), the recipe record, the solver, the method's own state
    (PIRL's memory bank and Z), the seed, and the side of the images the trunk was trained on."""
    perms = torch.from_numpy(np.asarray(permutations)) if permutations is not None and len(permutations) \
        else torch.zeros(0, 9, dtype=torch.long)
    return dict(model=model.state_dict(), trunk=cfg.trunk, width=float(cfg.width), method=cfg.method,
                iter=iteration, permutations=perms, solver=solver, method_state=method_state, seed=cfg.seed,
                input_size=int(input_size), **record)


def is_trunk_checkpoint(ck) -> bool:
    return isinstance(ck, dict) and isinstance(ck.get("trunk"), str) and "method" in ck and "model" in ck


def _check_trunk_record(ck: dict, path: str) -> None:
    """One line for a trunk checkpoint whose record does not say a net we build (a damaged or foreign file)."""
    from tools.nets import TRUNK_NAMES
    from .config import METHODS
    width, size = ck.get("width"), ck.get("input_size", 64)
    if ck["trunk"] not in TRUNK_NAMES or ck["method"] not in METHODS or not isinstance(ck["model"], dict) \
            or isinstance(width, bool) or not isinstance(width, (int, float)) or not 1 / 96 <= width <= 16 \
            or isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096 \
            or not isinstance(ck.get("permutations", torch.zeros(0, 9)), torch.Tensor):
        raise UserError(f"{path}: its record (trunk {ck.get('trunk')!r}, method {ck.get('method')!r}, width "
                        f"{width!r}, input size {size!r}) is not a net `jigsaw train --trunk` builds")


def resume_trunk(path: str, cfg, model, permutations: np.ndarray) -> Tuple[dict, dict, int]:
    """Load a trunk run's last.pt into `model`: (solver state, method state, iteration), or one line saying what
    differs from the settings."""
    ck = load_checkpoint(path)
    if not is_trunk_checkpoint(ck):
        raise UserError(f"{path}: not a checkpoint of `jigsaw train --trunk` (a CFN run resumes with --trunk cfn)")
    _check_trunk_record(ck, path)
    was = (ck["trunk"], float(ck["width"]), ck["method"])
    if was != (cfg.trunk, float(cfg.width), cfg.method):
        raise UserError(f"{path}: trained as --trunk {was[0]} --width {was[1]:g} --method {was[2]}, not --trunk "
                        f"{cfg.trunk} --width {cfg.width:g} --method {cfg.method}")
    if not np.array_equal(ck["permutations"].numpy(), permutations):
        raise UserError(f"{path}: the checkpoint was trained with another permutation set")
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as e:
        raise UserError(f"{path}: the weights do not fit the net ({str(e).splitlines()[-1].strip()[:200]})") from None
    return ck["solver"], ck.get("method_state") or {}, int(ck["iter"])


def export_trunk(path: str, output: str) -> Optional[str]:
    """`jigsaw convert` of a trunk run: its trunk as a plain torchvision state_dict (`output` NAME.pth or .pt), or
    a ResNet trunk in Caffe's form (NAME.prototxt + NAME.caffemodel, checked on the way back); what was written,
    said, or None when `path` is not a trunk run's checkpoint."""
    from tools.run.checkpoint import save_checkpoint
    ck = load_checkpoint(path)
    if not is_trunk_checkpoint(ck):
        return None
    trunk, _ = read_trunk(path, ck)
    if not output.endswith((".pth", ".pt")):
        from tools.caffe.writer import pair_stem
        from .trunk_caffe import write_trunk_caffe
        if not str(ck["trunk"]).startswith("resnet"):
            raise UserError(f"{path}: a {ck['trunk']} trunk converts to a torchvision state_dict (-o NAME.pth); "
                            "Caffe's form is written for resnet18 and resnet50 trunks")
        stem, size = pair_stem(output), int(ck.get("input_size", 64))
        err = write_trunk_caffe(trunk, size, stem + ".prototxt", stem + ".caffemodel")
        return (f"wrote {stem}.prototxt, {stem}.caffemodel: the {ck['trunk']} trunk for {size} px input, features "
                f"at top 'pool' (stages: stem, layer1..layer4); rebuilt by tools.caffe it gives the trunk's "
                f"features to {err:.1e} of the largest")
    save_checkpoint(output, trunk.torchvision_state())
    return (f"wrote {output}: torchvision {ck['trunk']} weights (width {float(ck['width']):g}) without the classifier: "
            f"torchvision.models.{ck['trunk']}().load_state_dict(state, strict=False) takes it")


def read_trunk(path: str, ck: Optional[dict] = None):
    """(the trunk, its checkpoint) of a `jigsaw train --trunk` run, in eval mode; transfer probes it."""
    from tools.nets.trunks import build_trunk, load_torchvision_state
    ck = load_checkpoint(path) if ck is None else ck
    if not is_trunk_checkpoint(ck):
        raise UserError(f"{path}: not a checkpoint of `jigsaw train --trunk`")
    _check_trunk_record(ck, path)
    trunk = build_trunk(ck["trunk"], float(ck["width"]))
    prefix = "trunk.net."
    load_torchvision_state(trunk, {k[len(prefix):]: v for k, v in ck["model"].items()
                                   if isinstance(k, str) and k.startswith(prefix)}, path)
    return trunk.eval(), ck
