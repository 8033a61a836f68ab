"""The CFN in Caffe's own form: prototxt text (deploy, train_val) and solver, with the original names.

Input `data` is (N, 27, 64, 64): nine 3-channel tiles stacked along channels, sliced back into
`data_s1`..`data_s9`; branch layers are `conv1_s1`..`fc6_s9`, all sharing `conv1_w`, `conv1_b`, ...;
then Concat, `fc7`, `fc8`, and a Softmax `prob` (deploy) or SoftmaxWithLoss + Accuracy (train_val).
A train_val for the jps / jps++ recipes starts with the jigsaw fork's own Data layers (hash file,
crop 255, siamese/patch/jitter sizes, mean values; jps++ adds the second Data layer, MergeData, MVN
and the x50 Power), so the fork's Caffe runs it as it runs its own train_val_cfn_jps*.prototxt.
"""
import functools
import math
import os

import numpy as np
import torch

from tools.run.atomic import atomic_files, atomic_open
from tools.caffe.caffemodel import read_caffemodel, write_caffemodel
from tools.run.errors import CaffeError, UserError
from tools.caffe.prototxt import read_net

from .architecture import BRANCH, CONVS, DROPOUT, FILLERS, PARAM_MULTS, SHARED, WEIGHTED, pool5_side
from .caffe_recipe import recipe_header
from .cfn import CFN
from .recipes import recipe as get_recipe


def _params(name, shared):
    names = (f'name: "{name}_w" ', f'name: "{name}_b" ') if shared else ("", "")
    return "".join(f"  param {{ {n}lr_mult: {lr:g} decay_mult: {decay:g} }}\n"
                   for n, (lr, decay) in zip(names, PARAM_MULTS))


def _fillers(name):
    std, bias = FILLERS[name]
    return (f'    weight_filler {{ type: "gaussian" std: {std} }}\n'
            f'    bias_filler {{ type: "constant" value: {bias} }}\n')


def _dropout(name, blob):
    return (f'layer {{ name: "{name}" type: "Dropout" bottom: "{blob}" top: "{blob}" '
            f"dropout_param {{ dropout_ratio: {DROPOUT:g} }} }}\n")


def _branch(i, widths):
    s, prev, out = f"_s{i}", f"data_s{i}", []
    for layer in BRANCH:
        name, top = layer.name, layer.name + s
        if layer.kind == "conv":
            out.append(f'layer {{\n  name: "{top}" type: "Convolution" bottom: "{prev}" top: "{top}"\n'
                       + _params(name, True) +
                       f"  convolution_param {{\n    num_output: {widths[name]} kernel_size: {layer.kernel} "
                       f"stride: {layer.stride} pad: {layer.pad} group: {layer.group}\n" + _fillers(name) + "  }\n}\n")
            out.append(f'layer {{ name: "relu{name[-1]}{s}" type: "ReLU" bottom: "{top}" top: "{top}" }}\n')
        elif layer.kind == "pool":
            out.append(f'layer {{ name: "{top}" type: "Pooling" bottom: "{prev}" top: "{top}" '
                       f"pooling_param {{ pool: MAX kernel_size: {layer.kernel} stride: {layer.stride} }} }}\n")
        else:
            size, alpha, beta, k = layer.lrn
            extra = f" k: {k:g}" if k != 1 else ""  # Caffe's default k is 1
            out.append(f'layer {{ name: "{top}" type: "LRN" bottom: "{prev}" top: "{top}" '
                       f"lrn_param {{ local_size: {size} alpha: {alpha:g} beta: {beta:g}{extra} }} }}\n")
        prev = top
    top = f"fc6{s}"
    out.append(f'layer {{\n  name: "{top}" type: "InnerProduct" bottom: "{prev}" top: "{top}"\n'
               + _params("fc6", True) + f"  inner_product_param {{\n    num_output: {widths['fc6']}\n"
               + _fillers("fc6") + "  }\n}\n")
    out.append(f'layer {{ name: "relu6{s}" type: "ReLU" bottom: "{top}" top: "{top}" }}\n')
    out.append(_dropout(f"drop6{s}", top))
    return "".join(out)


def _fc(name, bottom, n):
    return (f'layer {{\n  name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}"\n'
            + _params(name, False) + f"  inner_product_param {{\n    num_output: {n}\n"
            + _fillers(name) + "  }\n}\n")


def _fork_data(name, tops, cfg, hash_file, mean=True):
    """The fork's Data layer in TRAIN and TEST (its train_val files: batch 256 / 50)."""
    means = "".join(f"mean_value: {int(v)} " for v in cfg.mean_values) if mean and cfg.mean_values else ""
    hashed = f'hash_file: "{hash_file}" ' if hash_file else ""
    return "".join(
        f'layer {{\n  name: "{name}" type: "Data" ' + " ".join(f'top: "{t}"' for t in tops) + "\n"
        f"  include {{ phase: {phase} }}\n"
        f"  transform_param {{ mirror: false crop_size: {cfg.crop} {means}{hashed}siamese_size: 9 "
        f"patch_size: {cfg.tile} jitter_size: {cfg.jitter} }}\n"
        f'  data_param {{ source: "./jps_dataset/{split}" batch_size: {bs} backend: LMDB }}\n}}\n'
        for phase, split, bs in (("TRAIN", "train", 256), ("TEST", "val", 50)))


def _slice(name, bottom, tops):
    return (f'layer {{ name: "{name}" type: "Slice" bottom: "{bottom}" '
            + " ".join(f'top: "{t}"' for t in tops) + " slice_param { axis: 1 } }\n")


def _fork_geometry(cfg, tile):
    """True when the fork's Data layer cuts these puzzles: its own recipe, grid and tile size."""
    own = get_recipe(cfg.recipe)
    return tile == cfg.tile and all(getattr(cfg, k) == getattr(own, k) for k in ("crop", "cell", "tile", "jitter"))


def _train_val_head(num_permutations, tile, recipe, hash_file=None):
    """Everything before the branches: data into `data_s1`..`data_s9` and `label`. `recipe`: a name
    or a run's PuzzleConfig (another grid than the recipe's own is fed as an input, like paper's)."""
    cfg = get_recipe(recipe) if isinstance(recipe, str) else recipe
    hash_file = hash_file or f"permutations_{num_permutations}.bin"
    tiles = [f"data_s{i}" for i in range(1, 10)]
    fork = _fork_geometry(cfg, tile)
    if cfg.recipe == "jps" and fork:
        return _fork_data("data", ["data", "label"], cfg, hash_file) + _slice("slice", "data", tiles)
    if cfg.recipe == "jps++" and fork:
        own, other = [f"data_t{i}" for i in range(1, 10)], [f"data_r{i}" for i in range(1, 10)]
        text = (_fork_data("data", ["data", "label"], cfg, hash_file)
                + _fork_data("data_r", ["data_r"], cfg, None) + _slice("slice", "data", own)
                + _slice("slice_r", "data_r", other)
                + 'layer {\n  name: "merge" type: "MergeData" '
                + " ".join(f'bottom: "{b}"' for b in own + other) + "\n  "
                + " ".join(f'top: "{t}"' for t in tiles) + ' top: "sub_num"\n'
                f"  merge_data_param {{ min_substitute: 0 max_substitute: {cfg.substitute} }}\n}}\n"
                'layer { name: "silence_sub_num" type: "Silence" bottom: "sub_num" }\n')
        for i, t in enumerate(tiles, 1):
            text += (f'layer {{ name: "datamvn_t{i}" type: "MVN" bottom: "{t}" top: "{t}" '
                     "mvn_param { across_channels: true } }\n"
                     f'layer {{ name: "datascale_t{i}" type: "Power" bottom: "{t}" top: "{t}" '
                     f"power_param {{ scale: {cfg.scale:g} }} }}\n")
        return text
    # paper / bbrattoli cut puzzles no Caffe data layer can: tiles come from `jigsaw` as inputs
    return (f'layer {{ name: "data" type: "Input" top: "data" top: "label" input_param {{ '
            f"shape {{ dim: 256 dim: 27 dim: {tile} dim: {tile} }} shape {{ dim: 256 }} }} }}\n"
            + _slice("slice", "data", tiles))


def cfn_prototxt(widths, num_permutations, kind="deploy", batch=1, tile=64, recipe="jps", hash_file=None):
    """Caffe text of the CFN. `kind`: "deploy" (Input, Softmax prob) or "train_val" (the data layers
    of `recipe` with TRAIN/TEST rules and `hash_file` (the permutations, the fork's .bin form),
    SoftmaxWithLoss, Accuracy)."""
    if kind == "deploy":
        text = (f'name: "CFN"\nlayer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ '
                f"dim: {batch} dim: 27 dim: {tile} dim: {tile} }} }} }}\n")
        text += _slice("slice", "data", [f"data_s{i}" for i in range(1, 10)])
    elif kind == "train_val":
        text = 'name: "CFN"\n' + _train_val_head(num_permutations, tile, recipe, hash_file)
    else:
        raise ValueError(f"kind must be 'deploy' or 'train_val', got {kind!r}")
    text += "".join(_branch(i, widths) for i in range(1, 10))
    bottoms = " ".join(f'bottom: "fc6_s{i}"' for i in range(1, 10))
    text += f'layer {{ name: "fc6_concat" type: "Concat" {bottoms} top: "fc6_concat" }}\n'
    text += _fc("fc7", "fc6_concat", widths["fc7"])
    text += 'layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }\n' + _dropout("drop7", "fc7")
    text += _fc("fc8", "fc7", num_permutations)
    if kind == "deploy":
        text += 'layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }\n'
    else:
        text += ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss" }\n'
                 'layer { name: "accuracy" type: "Accuracy" bottom: "fc8" bottom: "label" top: "accuracy" '
                 "include { phase: TEST } }\n")
    return text


def committed_prototxts():
    """{file name in prototxt/: text} for the generated files committed there (a test keeps them equal;
    `python -m prototxt` rewrites them after a change to architecture.py)."""
    from .architecture import widths_for
    w = widths_for(1.0)
    return {"cfn_deploy.prototxt": cfn_prototxt(w, 1000, "deploy"),
            "cfn_train_val.prototxt": cfn_prototxt(w, 1000, "train_val"),
            "cfn_train_val_jps++.prototxt": cfn_prototxt(w, 701, "train_val", recipe="jps++")}


# ---- weights: a CFN module <-> the Caffe pair --------------------------------------------------

@functools.lru_cache(maxsize=4)
def _deploy(widths, num_permutations, tile):
    """The deploy text, written as the layer table gives it, and its NetParameter (which names the
    caffemodel's layers), parsed once per net shape rather than at every snapshot."""
    text = cfn_prototxt(dict(widths), num_permutations, "deploy", tile=tile)
    return text, read_net(text)


def caffe_blobs(model):
    """{caffe layer name: [weight, bias]} for the Caffe form (shared weights under every branch)."""
    out = {}
    for name in WEIGHTED:
        layer = getattr(model, name)
        arrays = [layer.weight.detach().float().cpu().numpy(), layer.bias.detach().float().cpu().numpy()]
        names = [f"{name}_s{i}" for i in range(1, 10)] if name in SHARED else [name]
        out.update({n: arrays for n in names})
    return out

def to_caffe(model, prototxt_path, caffemodel_path, recipe=None, permutations=None, train_val_path=None):
    """Write Caffe's own deploy form (input (1, 27, 64, 64), Slice, shared branches, prob); with
    `recipe`, also a train_val in that recipe's form (the jigsaw fork's data layers for jps /
    jps++; default path STEM_train_val.prototxt) and, with `permutations`, its hash file
    permutations_N.bin beside it (the fork's .bin form and name). Returns the paths written."""
    text, net = _deploy(tuple(model.widths.items()), model.num_permutations, model.tile)
    with atomic_files(caffemodel_path, prototxt_path) as (weights_tmp, text_tmp):  # the pair changes as a unit
        write_caffemodel(weights_tmp, net, caffe_blobs(model))
        with open(text_tmp, "w") as f:
            f.write(text)
    written = [prototxt_path, caffemodel_path]
    if recipe:
        train_val_path = train_val_path or os.path.splitext(prototxt_path)[0] + "_train_val.prototxt"
        name = f"permutations_{model.num_permutations}.bin"
        text = cfn_prototxt(model.widths, model.num_permutations, "train_val", tile=model.tile,
                            recipe=recipe, hash_file=name)
        text = recipe_header(get_recipe(recipe) if isinstance(recipe, str) else recipe) + text
        with atomic_open(train_val_path, "w") as f:
            f.write(text)
        written.append(train_val_path)
        if permutations is not None:
            from .permutations import load_permutations, save_permutations
            hash_path = os.path.join(os.path.dirname(os.path.abspath(train_val_path)), name)
            if os.path.exists(hash_path) and not np.array_equal(load_permutations(hash_path), permutations):
                raise UserError(f"{hash_path}: holds other permutations; not overwritten")
            save_permutations(hash_path, permutations)
            written.append(hash_path)
    return written

def _base_name(name):
    """conv1 for conv1 and its Siamese copies conv1_s1 .. conv1_s9."""
    return name.rsplit("_s", 1)[0] if "_s" in name else name


def _check_net(net, prototxt, caffemodel, blobs):
    """The net a .caffemodel is said to come from describes its weights: every CFN layer there (plain or as a
    Siamese copy), of the right type, with the outputs (and kernels, where given) its blobs have."""
    layers = {}
    for layer in net.layer:
        layers.setdefault(_base_name(layer.name), layer)
    missing = [n for n in WEIGHTED if n not in layers]
    if missing:
        names = ", ".join(layer.name for layer in net.layer[:8]) or "none"
        raise CaffeError(f"{prototxt}: not the net of {caffemodel}: it has no layer {', '.join(missing)} "
                         f"(its layers: {names}{', ...' if len(net.layer) > 8 else ''})")
    for n in WEIGHTED:
        layer, shape = layers[n], tuple(blobs[n][0].shape)
        kind, param = ("Convolution", layer.convolution_param) if n in CONVS else \
            ("InnerProduct", layer.inner_product_param)
        if layer.type != kind:
            raise CaffeError(f"{prototxt}: layer '{layer.name}' is a {layer.type}; the weights of {n} are a {kind}'s")
        if param.num_output != shape[0]:
            raise CaffeError(f"{prototxt}: layer '{layer.name}' has num_output {param.num_output}, its weights in "
                             f"{caffemodel} have {shape[0]}")
        if n in CONVS:
            given = (param.kernel_h or (param.kernel_size[0] if param.kernel_size else 0),
                     param.kernel_w or (param.kernel_size[-1] if param.kernel_size else 0))
            if given != (0, 0) and given != shape[2:]:
                raise CaffeError(f"{prototxt}: layer '{layer.name}' has {given[0]}x{given[1]} kernels, its weights "
                                 f"in {caffemodel} {shape[2]}x{shape[3]}")


def from_caffe(prototxt, caffemodel):
    """A CFN with the weights of an original (or our) CFN .caffemodel, mapped by layer name; `prototxt`, when
    given, must be their net (checked layer by layer)."""
    net = read_net(prototxt) if prototxt else None
    _, named = read_caffemodel(caffemodel)
    blobs = {}
    for name, arrays in named:
        base = _base_name(name)
        if base in WEIGHTED and arrays and base not in blobs:
            blobs[base] = arrays
    missing = [n for n in WEIGHTED if n not in blobs]
    if missing:
        raise CaffeError(f"{caffemodel}: no weights for CFN layer(s) {', '.join(missing)} "
                         "(expected conv1..conv5 or conv1_s1.., fc6, fc7, fc8)")
    for n in WEIGHTED:  # shapes before sizes: a forged header must not size the net
        shape = tuple(blobs[n][0].shape)
        if len(shape) != (4 if n in CONVS else 2) or min(shape) <= 0:
            raise CaffeError(f"{caffemodel}: layer '{n}' weight blob has shape {shape}; a CFN needs "
                             f"{'(out, in, k, k)' if n in CONVS else '(out, in)'} with every size positive")
        if len(blobs[n]) > 1 and tuple(blobs[n][1].shape) not in ((shape[0],), (1, 1, 1, shape[0])):
            raise CaffeError(f"{caffemodel}: layer '{n}' bias blob has shape {tuple(blobs[n][1].shape)}, "
                             f"its weights have {shape[0]} outputs")
    widths = {n: blobs[n][0].shape[0] for n in (*CONVS, "fc6", "fc7")}
    perms = blobs["fc8"][0].shape[0]
    side = int(round(math.sqrt(blobs["fc6"][0].shape[1] // widths["conv5"])))
    tile = next((t for t in range(32, 256) if pool5_side(t) == side), 64)
    if net is not None:
        _check_net(net, prototxt, caffemodel, blobs)
    model = CFN(num_permutations=perms, width=widths, tile=tile)
    with torch.no_grad():
        for name, arrays in blobs.items():
            layer = getattr(model, name)
            for target, blob in zip((layer.weight, layer.bias), arrays):
                if tuple(blob.shape) != tuple(target.shape) and blob.data.size != target.numel():
                    raise CaffeError(f"{caffemodel}: layer '{name}' blob shape {tuple(blob.shape)}, "
                                     f"the CFN expects {tuple(target.shape)}")
                target.copy_(torch.from_numpy(blob.data.astype("float32").reshape(target.shape)))
    return model
