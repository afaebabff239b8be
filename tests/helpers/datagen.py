"""Shared helpers for the data tests: archives whose pixels encode their labels (an independent
reference for label <-> image agreement) and a loopback HTTP server with Range support."""
from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from helpers.formats import write_cifar10_archive
from simpleclr.data.cifar import write_cifar100_archive
from simpleclr.data.tinyimagenet import write_tiny_imagenet_zip


def coded_images(labels: np.ndarray, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 (N, 3, size, size): channel 0 = 2 * label, channel 1 = index % 256, channel 2 noise."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    out[:, 0] = (2 * np.asarray(labels))[:, None, None]
    out[:, 1] = (np.arange(n) % 256)[:, None, None]
    out[:, 2] = rng.integers(0, 256, (n, size, size))
    return out


def shuffled_labels(num_classes: int, per_class: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def coded_cifar100(path: Path, num_classes: int = 10, train: int = 6, test: int = 3) -> Path:
    """A cifar-100-python.tar.gz whose images encode their fine label (coarse = fine // 5)."""
    parts = []
    for seed, per in ((1, train), (2, test)):
        labels = shuffled_labels(num_classes, per, seed)
        parts.append((coded_images(labels, seed=seed), labels, labels // 5))
    fine = [f"fine{c}" for c in range(num_classes)]
    coarse = [f"coarse{k}" for k in range((num_classes + 4) // 5)]
    return write_cifar100_archive(path, parts[0], parts[1], fine, coarse)


def coded_cifar10(path: Path, train: int = 5, test: int = 2) -> Path:
    labels_tr, labels_te = shuffled_labels(10, train, 3), shuffled_labels(10, test, 4)
    return write_cifar10_archive(path, (coded_images(labels_tr), labels_tr),
                                 (coded_images(labels_te), labels_te), [f"c{k}" for k in range(10)])


def tiny_value(c: int) -> int:
    """The grey level that encodes Tiny ImageNet class c (spaced so JPEG error cannot blur them)."""
    return 20 + 30 * c


def coded_tiny(path: Path, num_classes: int = 4, train: int = 3, val: int = 2,
               grey_every: int = 3) -> tuple[Path, list[str], list[tuple[str, str]]]:
    """A tiny-imagenet-200.zip of flat images whose level encodes the class; every
    ``grey_every``-th image is a single-channel JPEG. wnids are written out of sorted order.

    Returns the path, the wnids (sorted), and the val (file, wnid) annotations in file order.
    """
    wnids = [f"n{7000 - 11 * c:08d}" for c in range(num_classes)]  # descending: unsorted on disk
    order = sorted(wnids)
    k = 0

    def image(wnid: str) -> np.ndarray:
        nonlocal k
        k += 1
        v = tiny_value(order.index(wnid))
        if k % grey_every == 0:
            return np.full((64, 64), v, np.uint8)
        img = np.full((64, 64, 3), v, np.uint8)
        img[..., 1] = 255 - v
        return img

    train_imgs = {w: [image(w) for _ in range(train)] for w in wnids}
    val_wnids = [wnids[c] for c in shuffled_labels(num_classes, val, 5)]
    val_imgs = [(image(w), w) for w in val_wnids]
    words = {w: f"thing{order.index(w)}, other" for w in wnids}
    write_tiny_imagenet_zip(path, train_imgs, val_imgs, [np.zeros((64, 64, 3), np.uint8)], words)
    return path, order, [(f"val_{i}.JPEG", w) for i, w in enumerate(val_wnids)]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "LoopbackServer"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path.rsplit("/", 1)[-1] if srv.flat else self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.ranges and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:  # announce everything, send a prefix, drop the connection
            self.wfile.write(body[:srv.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


class LoopbackServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, Optional[str]]] = []
        self.ranges = True          # honour Range requests (206)
        self.flat = True            # serve by file name, whatever the folder in the URL
        self.cut_after: Optional[int] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
