"""Fashion-MNIST where a user has no copy: found (a folder given, $JIGSAW_FASHION_MNIST, Debian's package, an
earlier download), else fetched from the dataset's published files into a cache folder, resumably, each file
checked against the checksums pinned here before it takes its final name."""
import gzip
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

from tools.run.atomic import ensure_dir
from tools.run.decoding import decoding, reason
from tools.run.errors import DatasetError

FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
ENV_FOLDER, ENV_URL, ENV_CACHE = "JIGSAW_FASHION_MNIST", "JIGSAW_FASHION_MNIST_URL", "JIGSAW_CACHE"
CHUNK = 1 << 16
TIMEOUT_S = 30  # a silent server is an error after this long, never a hang


@dataclass(frozen=True)
class Remote:
    """One published file: its name, size and MD5 as published, and the MD5 of its decompressed contents (Debian
    recompressed the files, so its .gz differ from the published ones while their contents are the same)."""
    name: str
    size: int
    md5: str
    contents_md5: str


# The dataset's README publishes the sizes and MD5s; the contents' MD5s are of Debian's dataset-fashion-mnist.
FASHION_MNIST_FILES = (
    Remote("train-images-idx3-ubyte.gz", 26421880, "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
           "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
    Remote("train-labels-idx1-ubyte.gz", 29515, "25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
    Remote("t10k-images-idx3-ubyte.gz", 4422102, "bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
    Remote("t10k-labels-idx1-ubyte.gz", 5148, "bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
)
HOW_TO_GET = (f"apt-get install dataset-fashion-mnist (Debian; it puts the files in {FASHION_MNIST_DEBIAN}), or "
              f"--data-root FOLDER / {ENV_FOLDER}=FOLDER with the four idx files, or let it download them "
              f"(about 30 MB from {FASHION_MNIST_URL})")


def cache_folder() -> str:
    """$JIGSAW_CACHE/fashion-mnist, else $XDG_CACHE_HOME/jigsaw/fashion-mnist, else ~/.cache/jigsaw/fashion-mnist."""
    base = os.environ.get(ENV_CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "jigsaw")
    return os.path.join(base, "fashion-mnist")


def _md5(read_chunks) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in read_chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _chunks(f):
    return iter(lambda: f.read(1 << 20), b"")


def mismatch(path: str, remote: Remote) -> Optional[str]:
    """None when `path` is the published file, or a recompressed copy of it (its contents' MD5 matches);
    else why not, in words."""
    with open(path, "rb") as f:
        whole = _md5(_chunks(f))
    if whole == remote.md5:
        return None
    try:
        with decoding(path, "gzip", make=lambda e: DatasetError(reason(e))), gzip.open(path, "rb") as f:
            contents = _md5(_chunks(f))
    except DatasetError as e:
        return f"checksum mismatch: MD5 {whole}, expected {remote.md5} (and it does not decompress: {e})"
    return None if contents == remote.contents_md5 else \
        f"checksum mismatch: MD5 {whole}, expected {remote.md5} (its contents' MD5 {contents}, expected " \
        f"{remote.contents_md5})"


def found_folder(files: Optional[Sequence[Remote]] = None) -> Optional[Tuple[str, str]]:
    """(folder, where it came from) of a copy already on this machine, without any download: $JIGSAW_FASHION_MNIST,
    Debian's package, or a finished earlier download (files take their names only once checked); or None."""
    if os.environ.get(ENV_FOLDER):
        return os.environ[ENV_FOLDER], f"${ENV_FOLDER}"
    if os.path.isdir(FASHION_MNIST_DEBIAN):
        return FASHION_MNIST_DEBIAN, "Debian's dataset-fashion-mnist"
    cache = cache_folder()
    if all(os.path.isfile(os.path.join(cache, r.name)) for r in files or FASHION_MNIST_FILES):
        return cache, "downloaded earlier"
    return None


def _open(url: str, offset: int):
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 (an http(s) URL of ours or the user's)


def download_file(base_url: str, remote: Remote, folder: str, progress: bool = True) -> str:
    """`folder`/NAME, fetched from `base_url` + NAME into NAME.part (resumed from its length with an HTTP range
    request; restarted when the server sends the whole file), never more than the published size, checked,
    then renamed. Any failure is one DatasetError line; what arrived stays in NAME.part for the next try."""
    from tqdm import tqdm
    final, url = os.path.join(folder, remote.name), base_url.rstrip("/") + "/" + remote.name
    part = final + ".part"
    if os.path.isfile(final) and mismatch(final, remote) is None:
        return final
    ensure_dir(folder)
    offset = os.path.getsize(part) if os.path.isfile(part) else 0
    if offset > remote.size:
        os.remove(part)
        offset = 0
    try:
        if offset < remote.size:
            with _open(url, offset) as response, open(part, "ab" if offset else "wb") as out:
                if offset and response.status != 206:  # the server ignored the range: it sends the whole file
                    out.truncate(0)
                    offset = 0
                with tqdm(total=remote.size, initial=offset, unit="B", unit_scale=True, desc=remote.name,
                          disable=not progress, leave=False) as bar:
                    for chunk in iter(lambda: response.read(CHUNK), b""):
                        if offset + len(chunk) > remote.size:
                            raise DatasetError(f"{url}: the server sent more than the {remote.size} bytes published "
                                               "for this file")
                        out.write(chunk)
                        offset += len(chunk)
                        bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DatasetError(f"{url}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", None) or e
        raise DatasetError(f"{url}: the download stopped at {offset:,} of {remote.size:,} bytes ({reason}); run "
                           "again to resume it") from None
    if offset < remote.size:
        raise DatasetError(f"{url}: the download stopped at {offset:,} of {remote.size:,} bytes (the server closed "
                           "the connection); run again to resume it")
    why = mismatch(part, remote)
    if why:
        os.remove(part)
        raise DatasetError(f"{url}: {why}; the file is removed, run again to fetch it anew")
    os.replace(part, final)  # NAME.part survives a cut to be resumed, so it is renamed here, not by atomic_open
    return final


def fashion_mnist_folder(data_root: Optional[str] = None, download: bool = True, progress: bool = True,
                         say: Callable[[str], None] = print, files: Optional[Sequence[Remote]] = None
                         ) -> Tuple[str, str]:
    """(folder, where it came from): the folder given, else one found on this machine (found_folder), else the
    published files fetched into cache_folder() from $JIGSAW_FASHION_MNIST_URL or the dataset's own address.
    DatasetError when there is none and no download is allowed or possible: the line says how to get it."""
    if data_root:
        return data_root, "the folder given"
    files = files or FASHION_MNIST_FILES
    found = found_folder(files)
    if found:
        return found
    if not download:
        raise DatasetError(f"Fashion-MNIST: not on this machine; {HOW_TO_GET}")
    base_url, folder = os.environ.get(ENV_URL) or FASHION_MNIST_URL, cache_folder()
    say(f"Fashion-MNIST: downloading {len(files)} files ({sum(r.size for r in files) / 1e6:.1f} MB) from {base_url} "
        f"into {folder}")
    try:
        for remote in files:
            download_file(base_url, remote, folder, progress)
    except DatasetError as e:
        raise DatasetError(f"{e} (or: {HOW_TO_GET})") from None
    return folder, f"downloaded from {base_url}"
