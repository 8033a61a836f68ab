"""transfer/downloads.py against a local HTTP server (no network): Fashion-MNIST found or fetched, resumed after a
cut, refused when its checksum is wrong, missing or silent, each failure one line; never more than published."""
import gzip
import hashlib
import os
import re

import numpy as np
import pytest

import transfer.downloads as downloads
from tools.run.errors import DatasetError
from transfer.datasets import load_idx_dataset

from .fmnist_server import NAMES, Server, idx_files, pinned


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch):
    """No Debian package, no $JIGSAW_FASHION_MNIST, an empty cache folder; the tiny files pinned as the real
    ones are."""
    files = idx_files()
    monkeypatch.setattr(downloads, "FASHION_MNIST_DEBIAN", str(tmp_path / "no-debian-package"))
    monkeypatch.setattr(downloads, "FASHION_MNIST_FILES", pinned(files))
    monkeypatch.delenv(downloads.ENV_FOLDER, raising=False)
    monkeypatch.delenv(downloads.ENV_URL, raising=False)
    monkeypatch.setenv(downloads.ENV_CACHE, str(tmp_path / "cache"))
    return files


def test_the_pinned_checksums_are_the_published_ones_and_debians_contents():
    sizes = {r.name: (r.size, r.md5) for r in downloads.FASHION_MNIST_FILES}
    assert sizes == {"train-images-idx3-ubyte.gz": (26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                     "train-labels-idx1-ubyte.gz": (29515, "25c81989df183df01b3e8a0aad5dffbe"),
                     "t10k-images-idx3-ubyte.gz": (4422102, "bef4ecab320f06d8554ea6380940ec79"),
                     "t10k-labels-idx1-ubyte.gz": (5148, "bb300cfdad3c16e7a12a480ee83cd310")}
    if not os.path.isdir(downloads.FASHION_MNIST_DEBIAN):
        pytest.skip("Debian's dataset-fashion-mnist is not installed: its contents cannot be compared here")
    for remote in downloads.FASHION_MNIST_FILES:  # recompressed by Debian: the contents' MD5 is what matches
        assert downloads.mismatch(os.path.join(downloads.FASHION_MNIST_DEBIAN, remote.name), remote) is None


def test_a_fresh_machine_downloads_checks_and_then_finds_the_files(fresh_machine, monkeypatch):
    assert downloads.found_folder() is None
    with Server(fresh_machine) as server:
        monkeypatch.setenv(downloads.ENV_URL, server.url)
        said = []
        folder, how = downloads.fashion_mnist_folder(progress=False, say=said.append)
    assert folder == downloads.cache_folder() and how == f"downloaded from {server.url}"
    assert said == [f"Fashion-MNIST: downloading 4 files ({sum(map(len, fresh_machine.values())) / 1e6:.1f} MB) "
                    f"from {server.url} into {folder}"]
    assert sorted(os.listdir(folder)) == sorted(NAMES)  # no .part left
    splits = load_idx_dataset(None)  # found in the cache by every command from now on
    assert splits["train"].images.shape == (400, 28, 28) and len(splits["test"]) == 120
    assert downloads.found_folder() == (folder, "downloaded earlier")
    assert downloads.fashion_mnist_folder(download=False) == (folder, "downloaded earlier")


def test_a_cut_download_resumes_from_what_arrived(fresh_machine, tmp_path):
    name = "train-images-idx3-ubyte.gz"
    remote = next(r for r in downloads.FASHION_MNIST_FILES if r.name == name)
    with Server(fresh_machine) as server:
        server.behaviour[name] = "truncated"
        with pytest.raises(DatasetError, match=r"the download stopped at [\d,]+ of [\d,]+ bytes .*run again to resume"):
            downloads.download_file(server.url, remote, str(tmp_path / "d"), progress=False)
        have = os.path.getsize(tmp_path / "d" / (name + ".part"))
        assert 0 < have < remote.size
        server.behaviour[name] = "ok"
        path = downloads.download_file(server.url, remote, str(tmp_path / "d"), progress=False)
    assert server.ranges == [(name, None), (name, f"bytes={have}-")]  # the second request asked for the rest
    assert open(path, "rb").read() == fresh_machine[name]


def test_a_server_that_ignores_the_range_is_fetched_whole(fresh_machine, tmp_path):
    name = "t10k-images-idx3-ubyte.gz"
    remote = next(r for r in downloads.FASHION_MNIST_FILES if r.name == name)
    os.makedirs(tmp_path / "d")
    (tmp_path / "d" / (name + ".part")).write_bytes(fresh_machine[name][:1000])
    with Server(fresh_machine) as server:
        server.behaviour[name] = "no-ranges"
        path = downloads.download_file(server.url, remote, str(tmp_path / "d"), progress=False)
    assert open(path, "rb").read() == fresh_machine[name]


@pytest.mark.parametrize("behaviour,needle", [
    ("corrupt", r"checksum mismatch: MD5 \w{32}, expected \w{32} \(and it does not decompress: .*\); the file is "
                r"removed, run again to fetch it anew$"),
    ("missing", "the server answered 404 Not Found"),
    ("extra", "the server sent more than the"),
])
def test_a_bad_file_is_one_line_and_leaves_no_file_under_its_name(fresh_machine, tmp_path, behaviour, needle):
    name = "t10k-images-idx3-ubyte.gz"
    remote = next(r for r in downloads.FASHION_MNIST_FILES if r.name == name)
    with Server(fresh_machine) as server:
        server.behaviour[name] = behaviour
        with pytest.raises(DatasetError) as e:
            downloads.download_file(server.url, remote, str(tmp_path / "d"), progress=False)
    message = str(e.value)
    assert message.startswith(server.url + name + ": ") and "\n" not in message
    assert re.search(needle, message), message
    assert not os.path.exists(tmp_path / "d" / name)
    if behaviour == "extra":  # never more on disk than the published size
        assert os.path.getsize(tmp_path / "d" / (name + ".part")) <= remote.size
    if behaviour == "corrupt":
        assert not os.path.exists(tmp_path / "d" / (name + ".part"))


def test_a_silent_server_is_an_error_not_a_hang(fresh_machine, tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "TIMEOUT_S", 0.5)
    remote = downloads.FASHION_MNIST_FILES[1]
    with Server(fresh_machine) as server:
        server.behaviour[remote.name] = "silent"
        with pytest.raises(DatasetError, match=r"stopped at 0 of [\d,]+ bytes \(.*timed out.*\); run again"):
            downloads.download_file(server.url, remote, str(tmp_path / "d"), progress=False)


def test_without_a_copy_or_a_server_the_line_says_how_to_get_it(fresh_machine, monkeypatch):
    with pytest.raises(DatasetError, match="not on this machine; apt-get install dataset-fashion-mnist") as e:
        downloads.fashion_mnist_folder(download=False)
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetError, match="not on this machine and no --data-root given; apt-get install"):
        load_idx_dataset(None)
    with Server({}) as server:  # nothing there: 404 for the first file, then how to get it some other way
        monkeypatch.setenv(downloads.ENV_URL, server.url)
        with pytest.raises(DatasetError, match=r"answered 404 Not Found \(or: apt-get install dataset-fashion-mnist"):
            downloads.fashion_mnist_folder(progress=False, say=lambda line: None)


def test_a_folder_given_or_in_the_environment_comes_first(fresh_machine, tmp_path, monkeypatch):
    assert downloads.fashion_mnist_folder(str(tmp_path)) == (str(tmp_path), "the folder given")
    monkeypatch.setenv(downloads.ENV_FOLDER, str(tmp_path / "mine"))
    assert downloads.fashion_mnist_folder() == (str(tmp_path / "mine"), "$JIGSAW_FASHION_MNIST")


def test_a_recompressed_copy_is_recognised_by_its_contents(fresh_machine, tmp_path):
    name = "train-labels-idx1-ubyte.gz"
    remote = next(r for r in downloads.FASHION_MNIST_FILES if r.name == name)
    path = tmp_path / name
    path.write_bytes(gzip.compress(gzip.decompress(fresh_machine[name]), compresslevel=1, mtime=12345))
    assert path.read_bytes() != fresh_machine[name] and downloads.mismatch(str(path), remote) is None
    contents = bytearray(gzip.decompress(fresh_machine[name]))
    contents[-1] ^= 1
    path.write_bytes(gzip.compress(bytes(contents)))
    assert downloads.mismatch(str(path), remote).endswith(f"(its contents' MD5 {hashlib.md5(contents).hexdigest()}, "
                                                          f"expected {remote.contents_md5})")
    path.write_bytes(np.arange(50, dtype=np.uint8).tobytes())
    assert "(and it does not decompress: " in downloads.mismatch(str(path), remote)
