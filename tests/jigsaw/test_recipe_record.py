"""The recipe travels with the weights: config.json, checkpoints, convert (both ways), evaluate,
resume and transfer read it back and never guess."""
import json

import numpy as np
import pytest
import torch

from jigsaw.caffe_form import from_caffe, to_caffe
from jigsaw.cfn import CFN
from jigsaw.cli import main
from jigsaw.permutations import load_permutations, make_permutations, save_permutations
from transfer.backbones import build_backbone

from .test_train import FAST


@pytest.fixture(scope="module")
def run(tmp_path_factory, photo_store):
    tmp = tmp_path_factory.mktemp("jpspp")
    perms = str(tmp / "p.npy")
    save_permutations(perms, make_permutations(8))
    out = tmp / "run"
    code = main(["train", "--recipe", "jps++", "--donor", "other", "--data", photo_store, "--permutations",
                 perms, "--out", str(out), *FAST, "--max-iter", "2", "--test-interval", "2", "--snapshot", "2"])
    assert code in (0, None)
    return tmp, out, perms


def test_the_run_records_its_recipe_everywhere(run):
    tmp, out, perms = run
    assert json.loads((out / "config.json").read_text())["recipe"] == "jps++"
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["recipe"] == "jps++" and ck["recipe_options"] == {"donor": "other"}
    train_val = (out / "caffe" / "cfn_train_val.prototxt").read_text()
    assert 'type: "MergeData"' in train_val and "jitter_size: 18" in train_val
    assert 'hash_file: "permutations_8.bin"' in train_val
    assert np.array_equal(load_permutations(str(out / "caffe" / "permutations_8.bin")), load_permutations(perms))


def test_convert_evaluate_and_transfer_read_it_back(run, photo_store, photo_store_square, capsys):
    tmp, out, perms = run
    assert main(["convert", str(out / "last.pt"), "-o", str(tmp / "cfn")]) == 0
    assert 'type: "MergeData"' in (tmp / "cfn_train_val.prototxt").read_text()
    assert (tmp / "cfn.caffemodel").exists() and (tmp / "permutations_8.bin").exists()
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(out / "last.pt"), "--data", photo_store]) == 0
    assert "(recipe jps++)" in capsys.readouterr().out
    assert main(["evaluate", "--weights", str(out / "last.pt"), "--data", photo_store, "--recipe", "paper"]) == 2
    assert "trained with recipe 'jps++', not 'paper'" in capsys.readouterr().err
    assert main(["evaluate", "--weights", str(out / "last.pt"), "--data", photo_store_square]) == 2
    assert "a 'square' store, but recipe 'jps++'" in capsys.readouterr().err
    backbone = build_backbone("cfn", str(out / "last.pt"))
    assert backbone.record["recipe"] == "jps++" and backbone.record["recipe_options"] == {"donor": "other"}


def test_resume_refuses_another_recipe(run, photo_store, capsys):
    tmp, out, perms = run
    code = main(["train", "--recipe", "jps", "--data", photo_store, "--permutations", perms, "--out", str(out),
                 *FAST, "--max-iter", "4", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "with recipe 'jps++'" in err


def test_a_caffemodel_converts_with_a_recorded_recipe(tmp_path, capsys):
    cfn = CFN(8, width=0.125, seed=0)
    to_caffe(cfn, str(tmp_path / "c.prototxt"), str(tmp_path / "c.caffemodel"))
    perms = str(tmp_path / "p8.bin")
    save_permutations(perms, make_permutations(8))
    assert main(["convert", str(tmp_path / "c.caffemodel"), "--permutations", perms, "-o", str(tmp_path / "c.pt")]) == 0
    assert torch.load(tmp_path / "c.pt", weights_only=True)["recipe"] == "jps"  # the original release's
    assert build_backbone("cfn", str(tmp_path / "c.caffemodel")).record["recipe"] == "jps"
    save_permutations(str(tmp_path / "p1.bin"), make_permutations(1))
    capsys.readouterr()
    assert main(["convert", str(tmp_path / "c.caffemodel"), "--permutations", str(tmp_path / "p1.bin"),
                 "-o", str(tmp_path / "d.pt")]) == 2
    assert "1 permutations, but" in capsys.readouterr().err


def test_evaluate_reproduces_a_bbrattoli_runs_validation_loss(tmp_path, photo_store_square, capsys):
    """The run's last validation (8 held-out images, batch 8, one batch) and `jigsaw evaluate` on the
    same store, batch and seed: the same puzzles through the checkpoint's own recipe."""
    import csv
    perms = str(tmp_path / "p.npy")
    save_permutations(perms, make_permutations(8))
    out = tmp_path / "run"
    fast = [a for a in FAST if a not in ("--val-fraction", "0.25")]
    assert main(["train", "--recipe", "bbrattoli", "--data", photo_store_square, "--val-data", photo_store_square,
                 "--permutations", perms, "--out", str(out), *fast, "--max-iter", "2", "--test-interval", "2",
                 "--seed", "3"]) in (0, None)
    with open(out / "val.csv") as f:
        want = float(list(csv.DictReader(f))[-1]["loss"])
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(out / "last.pt"), "--data", photo_store_square, "--batch-size", "8",
                 "--seed", "3"]) == 0
    text = capsys.readouterr().out
    got = float(text.split("loss ")[1].split()[0])
    assert "(recipe bbrattoli)" in text and abs(got - want) < 1e-3, (got, want)


def _small_grid_run(tmp_path, store, recipe_name, *extra):
    """(run folder, permutations): two iterations of `recipe_name` on a 42 px cell / 32 px tile grid, snapshot at 2."""
    perms = str(tmp_path / "p.npy")
    save_permutations(perms, make_permutations(8))
    out = tmp_path / "run"
    assert main(["train", "--recipe", recipe_name, "--cell", "42", "--tile", "32", "--data", store,
                 "--permutations", perms, "--out", str(out), *FAST, "--max-iter", "2", "--snapshot", "2",
                 *extra]) in (0, None)
    return out, perms


def test_a_small_image_grid_travels_with_the_run(tmp_path, photo_store_square, capsys):
    """--cell/--tile: recorded as recipe options; evaluate, convert, transfer and the Caffe form
    rebuild the same 32 px CFN; the train_val feeds tiles as inputs (no fork Data layer cuts them)."""
    from jigsaw.recipes import geometry, recipe_of
    out, perms = _small_grid_run(tmp_path, photo_store_square, "paper", "--test-interval", "2")
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["recipe_options"] == geometry(42, 32) == dict(crop=126, cell=42, tile=32, jitter=10)
    assert recipe_of(ck).tile == 32 and tuple(ck["model"]["fc6.weight"].shape)[1] == 32  # pool5 1x1, 32 ch
    assert main(["evaluate", "--weights", str(out / "last.pt"), "--data", photo_store_square]) == 0
    assert main(["convert", str(out / "last.pt"), "-o", str(tmp_path / "small")]) == 0
    back = from_caffe(None, str(tmp_path / "small.caffemodel"))
    assert back.tile == 32
    train_val = (out / "caffe" / "cfn_train_val.prototxt").read_text()
    assert "dim: 32 dim: 32" in train_val and 'type: "Data"' not in train_val
    backbone = build_backbone("cfn", str(out / "last.pt"))
    assert backbone.input_size == 32 and backbone.record["recipe_options"]["cell"] == 42
    with torch.no_grad():
        assert backbone(torch.rand(2, 3, 32, 32)).shape == (2, 32)
    capsys.readouterr()
    for bad in (["--tile", "8"], ["--cell", "30", "--tile", "32"]):
        assert main(["train", "--recipe", "paper", *bad, "--data", photo_store_square, "--permutations", perms,
                     "--out", str(tmp_path / "bad"), *FAST]) == 2
        assert "--cell" in capsys.readouterr().err


def test_a_caffemodel_takes_its_recipe_from_the_train_val_beside_it(tmp_path, photo_store_square, capsys):
    """`jigsaw convert x.caffemodel -o back.pt` recorded jps whatever the weights were trained with: it now reads
    the train_val beside them (our header with the recipe's options, or the fork's data layers), takes --recipe
    over it, and says which it used."""
    import shutil

    import prototxt
    out, _ = _small_grid_run(tmp_path, photo_store_square, "bbrattoli", "--test-interval", "0")
    snapshot = out / "caffe" / "cfn_iter_2.caffemodel"
    assert (out / "caffe" / "cfn_train_val.prototxt").read_text().startswith(
        '# jigsaw recipe: bbrattoli {"cell": 42, "crop": 126, "jitter": 10, "tile": 32}\n')
    capsys.readouterr()
    assert main(["convert", str(snapshot), "-o", str(tmp_path / "back.pt")]) == 0
    said = capsys.readouterr().out
    assert "(recipe bbrattoli: read from " in said and "cfn_train_val.prototxt)" in said, said
    ck = torch.load(tmp_path / "back.pt", weights_only=True)
    assert ck["recipe"] == "bbrattoli" and ck["recipe_options"]["tile"] == 32
    assert main(["convert", str(snapshot), "--recipe", "paper", "-o", str(tmp_path / "given.pt")]) == 0
    assert "(recipe paper: given (--recipe); " in capsys.readouterr().out
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(snapshot, alone / "w.caffemodel")
    assert main(["convert", str(alone / "w.caffemodel"), "-o", str(alone / "w.pt")]) == 0
    assert "(recipe jps: assumed: the original release's (no train_val prototxt beside it; give --recipe))" in \
        capsys.readouterr().out
    fork = tmp_path / "fork"  # the fork's own file: jps++ by its MergeData layer
    fork.mkdir()
    shutil.copy(prototxt.path("cfn_train_val_jps++.prototxt"), fork / "train_val_cfn_jps++.prototxt")
    to_caffe(CFN(701, width=0.125, seed=0), str(fork / "cfn.prototxt"), str(fork / "cfn.caffemodel"))
    assert main(["convert", str(fork / "cfn.caffemodel"), "-o", str(fork / "w.pt")]) == 0
    assert torch.load(fork / "w.pt", weights_only=True)["recipe"] == "jps++"


@pytest.mark.parametrize("neighbour,said", [
    # an ImageNet train_val's Data layer is not the fork's (no siamese_size): it says nothing of the puzzles
    ('layer { name: "d" type: "Data" top: "data" transform_param { crop_size: 227 } '
     'data_param { source: "x" batch_size: 1 } }\n', "does not say which"),
    ("not a prototxt {{{", "was not read: "),
    ('# jigsaw recipe: paper [1, 2]\n', "was not read: "),
    ('# jigsaw recipe: paper {"tile": "32"}\n', "was not read: "),
    ('# jigsaw recipe: paper {"tile": 32}\n', "not what a run records"),
    ('# jigsaw recipe: paper {"weights": 1}\n', "was not read: "),
    ('# jigsaw recipe: jsp\n', "did you mean 'jps'"),
])
def test_a_train_val_beside_that_says_nothing_or_nonsense_is_said_and_not_taken(tmp_path, capsys, neighbour, said):
    """The weights still convert (the original release's recipe, said so); no traceback, whatever the neighbour."""
    to_caffe(CFN(8, width=0.125, seed=0), str(tmp_path / "w.prototxt"), str(tmp_path / "w.caffemodel"))
    (tmp_path / "w_train_val.prototxt").write_text(neighbour)
    assert main(["convert", str(tmp_path / "w.caffemodel"), "-o", str(tmp_path / "w.pt")]) == 0
    out = capsys.readouterr().out
    assert "(recipe jps: assumed: the original release's (" in out and said in out, out
    assert torch.load(tmp_path / "w.pt", weights_only=True)["recipe"] == "jps"
