"""The one guard for decoders of a user's file: what a library raises on a damaged file becomes the file's one
line; a bug of ours (a library's exception type raised by project code), MemoryError, and types no decoder
raises keep their tracebacks."""
import gzip
import zlib

import pytest

from tools.run import hdf5
from tools.run.decoding import RAISES, decoding, raised_by_project
from tools.run.errors import DatasetError, UserError


def test_a_decoders_error_becomes_the_files_one_line(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"hello" * 100)[:20] + b"\x00" * 30)
    with pytest.raises(DatasetError) as e:
        with decoding(str(bad), "gzip", "a gzip file", DatasetError):
            with gzip.open(bad) as f:
                f.read()
    assert str(e.value).startswith(f"{bad}: not a gzip file (") and "\n" not in str(e.value)
    with pytest.raises(UserError, match=r"not deflate data \(error: Error -3"):
        with decoding("d.bin", "gzip", "deflate data"):
            zlib.decompress(b"\x78\x9c\xff\xff")  # raised by the C library, straight from the guarded line


def test_a_user_error_passes_as_it_is_and_other_types_keep_their_traceback():
    with pytest.raises(DatasetError, match="^mine$"):
        with decoding("f", "pickle", "x", UserError):
            raise DatasetError("mine")
    with pytest.raises(ZeroDivisionError):  # no decoder of the list raises it
        with decoding("f", "gzip", "x"):
            1 / 0
    with pytest.raises(MemoryError):  # never converted: a reader bounds what it allocates before it does
        with decoding("f", "pickle", "x"):
            bytearray(1 << 62)


def _project_function(module, source, name):
    """A function compiled into a project module, as if the module's own code were buggy."""
    namespace = vars(module)
    exec(compile(source, module.__file__, "exec"), namespace)  # noqa: S102 (the test injects a bug on purpose)
    return namespace.pop(name)


def test_a_bug_in_project_code_under_the_guard_keeps_its_traceback(tmp_path, monkeypatch):
    """hdf5.dataset runs under load_permutations' HDF5 guard, whose list holds KeyError, RuntimeError, TypeError:
    raised by the project's own code they are bugs, not damaged files."""
    from jigsaw import permutations
    from jigsaw.permutations import load_permutations, make_permutations, save_permutations
    path = str(tmp_path / "p.h5")
    save_permutations(path, make_permutations(5))
    for source, kind in (("def bug(f, name, path):\n    return {}['missing']\n", KeyError),
                         ("def bug(f, name, path):\n    raise RuntimeError('a bug')\n", RuntimeError),
                         ("def bug(f, name, path):\n    return None + 1\n", TypeError)):
        monkeypatch.setattr(permutations.hdf5, "dataset", _project_function(hdf5, source, "bug"))
        with pytest.raises(kind):
            load_permutations(path)
    monkeypatch.undo()
    assert load_permutations(path).shape == (5, 9)


def test_an_exception_from_a_library_frame_is_the_librarys():
    try:
        gzip.decompress(b"\x1f\x8b\x08\x00" + b"\x00" * 6 + b"\xff\xff")
    except RAISES["gzip"]() as e:
        assert not raised_by_project(e.__traceback__)
    try:
        {}["x"]
    except KeyError as e:  # raised here: a test module, not the project's
        assert not raised_by_project(e.__traceback__)


def test_every_decoder_names_exception_types_only():
    for name, types in RAISES.items():
        got = types()
        assert got and all(isinstance(t, type) and issubclass(t, BaseException) for t in got), name
        assert not any(t in (Exception, BaseException, MemoryError) for t in got), name
    with pytest.raises(KeyError, match="no decoder named"):
        decoding("f", "nonsense", "x")


def test_a_user_errors_message_is_one_line_whatever_it_quotes():
    """Found by the long fuzz (seed 34): a layer type holding an escaped newline was quoted into the message."""
    import warnings

    from tools.caffe.net import CaffeNet
    from tools.caffe.prototxt import read_net
    from tools.run.errors import CaffeError
    assert str(UserError("a\nb\r\u2028c")) == "a\\nb\\r\\u2028c"
    text = 'layer { name: "data" type: "I\\nput" top: "data" input_param { shape { dim: 1 dim: 3 } } }'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CaffeError, match=r"type 'I\\nput'") as e:
            CaffeNet(read_net(text), device="meta")
    assert len(str(e.value).splitlines()) == 1
