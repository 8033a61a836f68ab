"""The commands' parser: full option names only, and a 'did you mean' for a misspelt option, choice or name."""
import pytest

from tools.run.cli_runner import Parser
from tools.run.errors import DatasetError, UserError, closest, unknown


def _parser():
    p = Parser(prog="tool")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("fit")
    s.add_argument("--epochs", type=int)
    s.add_argument("--phase", choices=("head", "finetune", "both"))
    return p


@pytest.mark.parametrize("argv,said", [
    (["fit", "--epoch", "3"], "unrecognized arguments: --epoch 3 (--epoch: did you mean '--epochs'?)"),
    (["fit", "--lr", "0.1"], "unrecognized arguments: --lr 0.1\n"),
    (["fit", "--phase", "bth"], "invalid choice: 'bth'; did you mean 'both'? (choose from 'head', 'finetune', 'both')"),
])
def test_no_prefix_matching_and_a_did_you_mean(argv, said, capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(argv)
    assert e.value.code == 2 and said in capsys.readouterr().err


def test_full_names_still_parse():
    assert _parser().parse_args(["fit", "--epochs", "3", "--phase", "both"]).epochs == 3


def test_the_command_lines_use_it():
    """`--epoch` was silently `--epochs` in transfer finetune: argparse's prefix matching."""
    from jigsaw.cli import build_parser as jigsaw_parser
    from transfer.cli import build_parser as transfer_parser
    from tools.caffe.cli import build_parser as caffe_parser
    for build in (jigsaw_parser, transfer_parser, caffe_parser):
        parser = build()
        assert isinstance(parser, Parser) and not parser.allow_abbrev
    with pytest.raises(SystemExit):
        transfer_parser().parse_args(["finetune", "--dataset", "mnist", "--model", "mlp", "--out", "o", "--epoch", "3"])


def test_unknown_names_say_the_nearest_one():
    e = unknown("model", "alexnt", ["vgg16", "alexnet", "resnet50"])
    assert isinstance(e, UserError) and str(e) == ("unknown model 'alexnt'; did you mean 'alexnet'? "
                                                  "(known: alexnet, resnet50, vgg16)")
    assert str(unknown("dataset", "zzz", ["mnist"], cls=DatasetError, see="see `transfer list`")) == \
        "unknown dataset 'zzz' (see `transfer list`)"
    assert closest("--epoch", ["--epochs", "--batch-size"]) == "--epochs" and closest("x", ["--epochs"]) is None


@pytest.mark.parametrize("argv,said", [
    (["transfer", "finetune", "--dataset", "fashon-mnist", "--model", "mlp", "--out", "o"],
     "unknown dataset 'fashon-mnist'; did you mean 'fashion-mnist'?"),
    (["transfer", "finetune", "--dataset", "mnist", "--model", "alexnt", "--out", "o"],
     "unknown model 'alexnt'; did you mean 'alexnet'?"),
    (["transfer", "run", "cifar100-cnf", "--out", "o"], "unknown recipe 'cifar100-cnf'; did you mean 'cifar100-cfn'?"),
    (["transfer", "show", "cifar100-cnf"], "did you mean 'cifar100-cfn'?"),
    (["jigsaw", "train", "--out", "o", "--data", "d", "--permutations", "p", "--recipe", "jsp"],
     "unknown recipe 'jsp'; did you mean 'jps'?"),
    (["jigsaw", "show", "jps+"], "did you mean 'jps++'?"),
    (["jigsaw", "train", "--out", "o", "--data", "d", "--permutations", "p", "--solver", "cfn_solver_shrt"],
     "did you mean 'cfn_solver_short'?"),
])
def test_a_misspelt_name_is_one_line_with_the_nearest(argv, said, capsys, tmp_path, monkeypatch):
    import importlib
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(f"{argv[0]}.cli").main
    assert main(argv[1:]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and said in err, err
    assert list(tmp_path.iterdir()) == []  # said before anything was made
