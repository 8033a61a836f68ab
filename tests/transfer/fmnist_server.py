"""Tiny Fashion-MNIST-format idx files and a local HTTP server for them, standing in for the dataset's own address:
what a fresh machine without Debian's package downloads, with each file's behaviour chosen by the test."""
import gzip
import hashlib
import http.server
import os
import struct
import threading

import numpy as np

from transfer.downloads import Remote

NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")


def idx_files(n_train=400, n_test=120, seed=0):
    """{name: gzip bytes}: 28x28 images, ten classes, each class a faint template under strong noise (something to
    learn, not solved by every layer of every net)."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, (10, 28, 28))
    out = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = np.clip(0.25 * templates[labels] + rng.normal(96, 60, (n, 28, 28)), 0, 255).astype(np.uint8)
        out[f"{stem}-images-idx3-ubyte.gz"] = gzip.compress(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes(),
                                                            mtime=0)
        out[f"{stem}-labels-idx1-ubyte.gz"] = gzip.compress(struct.pack(">II", 0x801, n) + labels.tobytes(), mtime=0)
    return out


def pinned(files):
    """The Remote entries that pin these files, as transfer.downloads pins the published ones."""
    return tuple(Remote(name, len(data), hashlib.md5(data).hexdigest(),
                        hashlib.md5(gzip.decompress(data)).hexdigest()) for name, data in files.items())


class Server:
    """Serves `files` on 127.0.0.1 with HTTP ranges. `behaviour[name]`: 'ok', 'missing' (404), 'truncated' (the
    whole length declared, half of it sent, then the connection closed), 'corrupt' (one byte changed), 'extra'
    (more bytes than the file has), 'no-ranges' (the whole file whatever the request), 'silent' (never answers
    until the server stops). `ranges` records the Range header of each request."""

    def __init__(self, files):
        self.files, self.behaviour, self.ranges = dict(files), {}, []
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = os.path.basename(self.path)
                how = server.behaviour.get(name, "ok")
                server.ranges.append((name, self.headers.get("Range")))
                if how == "silent":
                    server.release.wait()
                    return
                if name not in server.files or how == "missing":
                    self.send_error(404, "Not Found")
                    return
                data = server.files[name]
                if how == "corrupt":
                    data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
                if how == "extra":
                    data = data + b"\0" * 100_000
                start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") and \
                    how != "no-ranges" else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if how == "truncated":
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
