"""Every file option of the three command lines, given a FIFO: one line and exit 2, never a reader blocked
forever (issue 26 §2). Each reader checks its file through tools.run.paths.user_file before opening it."""
import os

import pytest

HANG_GUARD_S = 60  # a reader blocked on the FIFO never returns; the refusals take a fraction of a second
NET = ('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }\n'
       'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }\n')

# name: (module, argv with {fifo} where the FIFO goes, the FIFO's file name)
CASES = {
    "train --permutations": ("jigsaw.cli", "train --data {dir} --permutations {fifo} --out {out}", "p.npy"),
    "train --permutations .bin": ("jigsaw.cli", "train --data {dir} --permutations {fifo} --out {out}", "p.bin"),
    "train --permutations .h5": ("jigsaw.cli", "train --data {dir} --permutations {fifo} --out {out}", "p.h5"),
    "train --solver": ("jigsaw.cli", "train --data {dir} --permutations {perms} --solver {fifo} --out {out}",
                       "s.prototxt"),
    "train --data (a store)": ("jigsaw.cli", "train --data {fifo} --permutations {perms} --out {out} --max-iter 1",
                               "s.h5"),
    "evaluate --weights": ("jigsaw.cli", "evaluate --weights {fifo} --data {dir}", "w.pt"),
    "evaluate --weights .caffemodel": ("jigsaw.cli", "evaluate --weights {fifo} --data {dir} --permutations {perms}",
                                       "w.caffemodel"),
    "convert SOURCE": ("jigsaw.cli", "convert {fifo} -o {out}/c", "w.pt"),
    "prepare --list": ("jigsaw.cli", "prepare {dir} -o {out}/s.h5 --list {fifo}", "l.txt"),
    "caffe-convert NET": ("tools.caffe.cli", "{fifo} --summary", "n.prototxt"),
    "caffe-convert WEIGHTS": ("tools.caffe.cli", "{net} {fifo} -o {out}/m.pt", "w.caffemodel"),
    "caffe-convert classify --labels": ("tools.caffe.cli", "classify {net} {weights} {image} --labels {fifo}",
                                        "l.txt"),
    "caffe-convert classify --mean": ("tools.caffe.cli", "classify {net} {weights} {image} --mean {fifo}",
                                      "m.binaryproto"),
    "transfer finetune --config": ("transfer.cli", "finetune --config {fifo} --out {out}", "c.json"),
    "transfer finetune --weights": ("transfer.cli", "finetune --dataset fashion-mnist --model cfn --weights {fifo} "
                                    "--out {out}", "w.pt"),
    "transfer finetune --finetune-solver": ("transfer.cli", "finetune --dataset fashion-mnist --model mlp "
                                            "--finetune-solver {fifo} --out {out} --limit-train 200 --no-progress", "s.prototxt"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from PIL import Image

    from jigsaw.permutations import make_permutations, save_permutations
    from tools import load_caffe_net, save_caffe_net
    base = tmp_path_factory.mktemp("fifo_files")
    (base / "images").mkdir()
    Image.new("RGB", (80, 80), (10, 20, 30)).save(base / "images" / "a.jpg")
    save_permutations(str(base / "perms.npy"), make_permutations(10, 0))
    (base / "net.prototxt").write_text(NET)
    save_caffe_net(load_caffe_net(NET, seed=0), str(base / "saved.prototxt"), str(base / "w.caffemodel"))
    return dict(dir=base / "images", perms=base / "perms.npy", net=base / "net.prototxt",
                weights=base / "w.caffemodel", image=base / "images" / "a.jpg")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_fifo_given_as_any_file_is_refused_in_one_line(tmp_path, files, case, capsys, monkeypatch):
    """In this process (the commands' main), with a watchdog: a reader blocked on the FIFO is released by
    opening its other end after HANG_GUARD_S, and the case fails."""
    import importlib
    import threading
    module, argv, name = CASES[case]
    fifo = tmp_path / name
    os.mkfifo(fifo)
    monkeypatch.chdir(tmp_path)
    args = argv.format(fifo=fifo, out=tmp_path / "out", **files).split()
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("code", importlib.import_module(module).main(args)),
                              daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)
    if worker.is_alive():  # blocked in open() or read(): release it, then fail
        with open(fifo, "wb"):
            pass
        worker.join(30)
        pytest.fail(f"{case}: the reader blocked on the FIFO")
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert result.get("code") == 2 and len(lines) == 1, lines[-20:]
    assert "not a regular file" in lines[0] and str(fifo) in lines[0], lines[0]


def test_user_file_names_what_is_wrong(tmp_path):
    from tools.run.errors import UserError
    from tools.run.paths import user_file
    (tmp_path / "f.txt").write_text("x")
    assert user_file(str(tmp_path / "f.txt")) == str(tmp_path / "f.txt")
    with pytest.raises(UserError, match="no such file"):
        user_file(str(tmp_path / "missing.txt"), "list file")
    with pytest.raises(UserError, match="is a folder; expected a list file"):
        user_file(str(tmp_path), "list file")
    with pytest.raises(UserError, match="NUL byte"):
        user_file(str(tmp_path / "a\0b"), "list file")
