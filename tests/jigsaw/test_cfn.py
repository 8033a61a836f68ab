"""The CFN module against its Caffe form: our own prototxt files, tools.load_caffe_net and OpenCV."""
import os
import warnings

import numpy as np
import pytest
import torch

import prototxt
from jigsaw.caffe_form import caffe_blobs, from_caffe, to_caffe
from jigsaw.caffe_form import cfn_prototxt, committed_prototxts
from jigsaw.cfn import CFN
from tools.caffe.caffemodel import read_caffemodel
from tools.caffe.prototxt import read_net, read_solver
from tools import load_caffe_net
from tools.run.errors import CaffeError

PROTO = os.path.join(os.path.dirname(__file__), "..", "..", "prototxt")


def test_shapes_pool5_and_parameter_sharing():
    m = CFN(100, width=0.25, seed=0).eval()
    x = torch.randn(2, 9, 3, 64, 64)
    assert m(x).shape == (2, 100)
    assert m.trunk(x[:, 0], upto="pool5").shape[-2:] == (3, 3)
    full = CFN(1000)
    assert full.fc6.in_features == 2304 and full.fc7.in_features == 9216


def test_committed_prototxt_files_are_what_the_code_generates():
    generated = committed_prototxts()
    assert set(generated) == {"cfn_deploy.prototxt", "cfn_train_val.prototxt", "cfn_train_val_jps++.prototxt"}
    for name, text in generated.items():
        with open(prototxt.path(name)) as f:
            assert f.read() == text, f"prototxt/{name} is stale: run `python -m prototxt`"


def test_the_paper_solver_file():
    sp = read_solver(prototxt.path("cfn_solver.prototxt"))
    assert (sp.type, sp.base_lr, sp.lr_policy, sp.gamma, sp.stepsize, sp.max_iter, sp.momentum) == \
        ("SGD", pytest.approx(0.01), "step", pytest.approx(0.1), 100000, 350000, pytest.approx(0.9))
    assert sp.weight_decay == pytest.approx(5e-4) and sp.net == "cfn_train_val.prototxt"


@pytest.mark.parametrize("phase", ["TEST", "TRAIN"])
def test_train_val_prototxt_built_by_tools_matches_the_module(tmp_path, phase):
    m = CFN(1000, seed=0).eval()
    to_caffe(m, str(tmp_path / "d.prototxt"), str(tmp_path / "w.caffemodel"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = load_caffe_net(os.path.join(PROTO, "cfn_train_val.prototxt"), str(tmp_path / "w.caffemodel"),
                             phase=phase, input_shapes={"data": (2, 27, 64, 64), "label": (2,)})
    net.eval()
    assert not net.report.missing
    x = torch.randn(2, 9, 3, 64, 64)
    label = torch.tensor([3.0, 999.0])
    out = net(data=x.reshape(2, 27, 64, 64), label=label, outputs=["fc8", "loss"])
    logits = m(x)
    assert torch.allclose(out["fc8"], logits, atol=1e-4)
    want = torch.nn.functional.cross_entropy(logits, label.long())
    assert abs(out["loss"].item() - want.item()) < 1e-4


def test_train_val_prototxt_declares_its_own_input_shapes():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no guessed channel count
        net = load_caffe_net(os.path.join(PROTO, "cfn_train_val.prototxt"), phase="TRAIN", seed=0)
    assert net.input_shapes == {"data": [256, 27, 64, 64], "label": [256]}
    assert net.blob_shapes["pool5_s9"] == (256, 256, 3, 3) and net.blob_shapes["fc8"] == (256, 1000)


def test_to_caffe_matches_opencv_and_round_trips(tmp_path):
    cv2 = pytest.importorskip("cv2")
    m = CFN(24, width=0.25, seed=1).eval()
    proto, model = str(tmp_path / "cfn.prototxt"), str(tmp_path / "cfn.caffemodel")
    to_caffe(m, proto, model)
    x = torch.randn(2, 9, 3, 64, 64)
    cv = cv2.dnn.readNetFromCaffe(proto, model)
    cv.setInput(x.reshape(2, 27, 64, 64).numpy())
    with torch.no_grad():
        want = m(x).numpy()
    assert np.abs(cv.forward("fc8") - want).max() <= 1e-4
    back = from_caffe(proto, model).eval()
    assert back.widths == m.widths and back.num_permutations == 24
    with torch.no_grad():
        assert torch.equal(back(x), m(x))


def test_snapshots_write_the_layer_tables_text_as_a_pair_parsed_once_per_net_shape(tmp_path, monkeypatch):
    import jigsaw.caffe_form as form
    form._deploy.cache_clear()
    parsed = []
    monkeypatch.setattr(form, "read_net", lambda text: parsed.append(text) or read_net(text))
    m = CFN(24, width=0.25, seed=1)
    for it in (2, 4, 6):  # what jigsaw train does at each snapshot
        to_caffe(m, str(tmp_path / "d.prototxt"), str(tmp_path / f"w_{it}.caffemodel"))
    assert len(parsed) == 1  # not printed, parsed and printed again every time
    assert (tmp_path / "d.prototxt").read_text() == cfn_prototxt(m.widths, 24, "deploy", tile=m.tile)
    assert sorted(os.listdir(tmp_path)) == ["d.prototxt", "w_2.caffemodel", "w_4.caffemodel", "w_6.caffemodel"]
    assert [layer.name for layer in read_caffemodel(str(tmp_path / "w_6.caffemodel"))[0].layer] == \
        [layer.name for layer in read_net(parsed[0]).layer]


def test_from_caffe_reports_missing_layers(tmp_path):
    from tools.caffe.caffemodel import write_caffemodel
    from tools.caffe.prototxt import read_net
    m = CFN(8, width=0.25)
    blobs = {k: v for k, v in caffe_blobs(m).items() if not k.startswith("fc7")}
    net = read_net(cfn_prototxt(m.widths, 8))
    write_caffemodel(str(tmp_path / "x.caffemodel"), net, blobs)
    with pytest.raises(CaffeError, match="no weights for CFN layer"):
        from_caffe(None, str(tmp_path / "x.caffemodel"))


def test_param_groups_follow_caffe_multipliers():
    groups = CFN(8, width=0.25).param_groups()
    assert [(g["lr_mult"], g["decay_mult"], len(g["params"])) for g in groups] == [(1.0, 1.0, 8), (2.0, 0.0, 8)]
    assert all(p.dim() == 1 for p in groups[1]["params"])


def test_caffe_fillers():
    m = CFN(100, seed=0)
    assert abs(m.conv1.weight.std().item() - 0.01) < 1e-3 and abs(m.fc7.weight.std().item() - 0.005) < 2e-4
    assert m.conv2.bias.eq(1).all() and m.conv1.bias.eq(0).all() and m.fc8.bias.eq(0).all()


@pytest.mark.parametrize("recipe_name,width", [("jps", 0.25), ("jps", 1.0), ("bbrattoli", 0.25), ("paper", 1.0)])
def test_msra_init_starts_above_ln_n_as_documented(recipe_name, width, photo_store, photo_store_square):
    """--init msra (README): the eight layers scaled to the tiles' RMS leave the logits at He's scale, an SD of
    a few units, so the first training loss (dropout on) is 1.5 to 5 x ln N, not ln N; calibrating it away was
    measured and lowered the probe benchmark (RESULTS.md). The README said "near ln N": this pins what it says now."""
    import torch.nn.functional as F

    from jigsaw.permutations import make_permutations
    from jigsaw.recipes import recipe
    from jigsaw.store import open_images
    from jigsaw.tiles import draw, make_puzzles
    cfg = recipe(recipe_name)
    source = open_images(photo_store if cfg.layout == "jps" else photo_store_square)
    perms = torch.as_tensor(make_permutations(30, seed=0))
    images = torch.from_numpy(source.read(np.resize(np.arange(len(source)), 32)))
    g = torch.Generator().manual_seed(0)
    drawn = draw(32, 30, images.shape[1:3], cfg, g)
    tiles = make_puzzles(images, perms, drawn, cfg)
    net = CFN(30, width=width, seed=0, init="msra", tile=cfg.tile)
    net.scale_to_input(tiles)
    torch.manual_seed(0)  # the dropout of the first step
    with torch.no_grad():
        logits = net.train()(tiles)
        loss = float(F.cross_entropy(logits, drawn.label))
    assert 1.2 * np.log(30) < loss < 6 * np.log(30), loss
    assert 1.5 < float(logits.std()) < 10, float(logits.std())


def test_shipped_solvers_are_found_by_name_from_any_folder(tmp_path, monkeypatch):
    from tools.run.errors import UserError
    monkeypatch.chdir(tmp_path)
    short = prototxt.path("cfn_solver_short.prototxt")
    for given in ("cfn_solver_short", "cfn_solver_short.prototxt", "prototxt/cfn_solver_short.prototxt"):
        assert prototxt.find_solver(given) == short
    assert prototxt.find_solver("cfn_solver") == prototxt.path("cfn_solver.prototxt")
    (tmp_path / "cfn_solver_short").write_text("base_lr: 0.1")  # a file of the user's own comes first
    assert prototxt.find_solver("cfn_solver_short") == "cfn_solver_short"
    assert prototxt.find_solver('base_lr: 0.1 type: "Adam"') == 'base_lr: 0.1 type: "Adam"'  # text
    with pytest.raises(UserError, match="did you mean 'cfn_solver_short'"):
        prototxt.find_solver("cfn_solver_shrt")
    with pytest.raises(UserError, match="elsewhere/x.prototxt: no such file"):
        prototxt.find_solver("elsewhere/x.prototxt")
    with pytest.raises(UserError, match="runs/a:b/s.prototxt: no such file"):  # a colon does not make it text
        prototxt.find_solver("runs/a:b/s.prototxt")
