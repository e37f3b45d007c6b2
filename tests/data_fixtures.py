"""Tiny, valid dataset files in the official on-disk formats, and a local HTTP server.

Used by ``test_data_vision.py`` and ``test_download.py``. Every writer takes a directory
(normally pytest's ``tmp_path``) and returns the arrays it wrote so tests can compare the loaded
tensors against them exactly.

* MNIST: big-endian IDX files, gzipped (``train-images-idx3-ubyte.gz`` ...).
* CIFAR-10/100: Python pickles of dicts with ``data`` ``(n, 3072)`` uint8 (channel-major) and
  ``labels``/``fine_labels``, in ``cifar-10-batches-py/`` and ``cifar-100-python/``.
* STL-10: raw uint8 ``*_X.bin`` (each image column-major ``3 x 96 x 96``) and ``*_y.bin`` (1..10).
* Downsampled ImageNet: ``train_data_batch_{i}.npz`` / ``val_data.npz`` with ``data``
  ``(n, 3*k*k)`` uint8 channel-major, ``labels`` 1..1000 and ``mean``.
"""

from __future__ import annotations

import gzip
import http.server
import pickle
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------
# MNIST


def write_idx_gz(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array in IDX format (magic 0x0000 08 ndim, big-endian dims), gzipped."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())
    return path


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def write_mnist(directory: Path, n_train: int = 120, n_test: int = 30, seed: int = 0) -> dict:
    """Write the four gzipped MNIST IDX files into ``directory``; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for key, fname in MNIST_FILES.items():
        write_idx_gz(directory / fname, arrays[key])
    return arrays


# --------------------------------------------------------------------------------------------
# CIFAR


def _dump(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 30, seed: int = 0) -> dict:
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    xs, ys = [], []
    for i in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        # keys as bytes, like the original Python-2 pickles read with encoding="bytes"
        _dump(d / f"data_batch_{i}", {b"data": x, b"labels": y, b"batch_label": b"b"})
        xs.append(x)
        ys.extend(y)
    xt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 10, n_test)]
    _dump(d / "test_batch", {"data": xt, "labels": yt})
    _dump(d / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return {
        "train_x": np.concatenate(xs).reshape(-1, 3, 32, 32),
        "train_y": np.array(ys),
        "test_x": xt.reshape(-1, 3, 32, 32),
        "test_y": np.array(yt),
    }


def write_cifar100(root: Path, n_train: int = 100, n_test: int = 30, seed: int = 0) -> dict:
    """``root/cifar-100-python/{train,test,meta}`` with ``fine_labels`` 0..99."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    x = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    y = [int(v) for v in rng.integers(0, 100, n_train)]
    xt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 100, n_test)]
    _dump(d / "train", {"data": x, "fine_labels": y, "coarse_labels": [v // 5 for v in y]})
    _dump(d / "test", {"data": xt, "fine_labels": yt, "coarse_labels": [v // 5 for v in yt]})
    _dump(d / "meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
    return {
        "train_x": x.reshape(-1, 3, 32, 32),
        "train_y": np.array(y),
        "test_x": xt.reshape(-1, 3, 32, 32),
        "test_y": np.array(yt),
    }


# --------------------------------------------------------------------------------------------
# STL-10


def write_stl10(root: Path, n_train: int = 40, n_test: int = 16, seed: int = 0) -> dict:
    """``root/stl10_binary/{train,test}_{X,y}.bin`` (images column-major, labels 1..10)."""
    rng = np.random.default_rng(seed)
    d = root / "stl10_binary"
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)  # (n, c, h, w)
        y = (np.arange(n) % 10 + 1).astype(np.uint8)
        # column-major per image: the file holds (n, c, w, h) in C order
        x.transpose(0, 1, 3, 2).tofile(d / f"{split}_X.bin")
        y.tofile(d / f"{split}_y.bin")
        out[f"{split}_x"], out[f"{split}_y"] = x, y.astype(np.int64) - 1
    return out


# --------------------------------------------------------------------------------------------
# downsampled ImageNet


def write_imagenet(
    directory: Path,
    size: int = 16,
    per_batch: int = 12,
    n_val: int = 10,
    seed: int = 0,
    fmt: str = "npz",
) -> dict:
    """``train_data_batch_1..10.npz`` and ``val_data.npz`` in ``directory``.

    ``fmt="pickle"`` writes the older pickle release instead (same names without ``.npz``).
    """
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    dim = 3 * size * size

    def save(name: str, data: np.ndarray, labels: np.ndarray) -> None:
        obj = {"data": data, "labels": [int(v) for v in labels], "mean": np.zeros(dim)}
        if fmt == "npz":
            np.savez(directory / f"{name}.npz", **obj)
        else:
            _dump(directory / name, obj)

    xs, ys = [], []
    for i in range(1, 11):
        x = rng.integers(0, 256, (per_batch, dim), dtype=np.uint8)
        y = rng.integers(1, 1001, per_batch)
        save(f"train_data_batch_{i}", x, y)
        xs.append(x)
        ys.append(y)
    xv = rng.integers(0, 256, (n_val, dim), dtype=np.uint8)
    yv = rng.integers(1, 1001, n_val)
    save("val_data", xv, yv)
    return {
        "train_x": np.concatenate(xs).reshape(-1, 3, size, size),
        "train_y": np.concatenate(ys) - 1,
        "test_x": xv.reshape(-1, 3, size, size),
        "test_y": yv - 1,
    }


# --------------------------------------------------------------------------------------------
# a local HTTP server with scripted misbehaviour


@dataclass
class Served:
    """What the server answers for one path.

    ``truncate_first``: the first this many requests announce the full ``Content-Length`` but
    send only half the bytes and close the connection. ``corrupt``: always send altered bytes
    (same length). ``no_length``: send no ``Content-Length`` (the end of the body is the end
    of the connection, as with chunked or streamed answers), so a cut transfer looks complete.
    """

    body: bytes
    truncate_first: int = 0
    corrupt: bool = False
    no_length: bool = False
    hits: int = 0


@dataclass
class LocalServer:
    base_url: str
    routes: dict[str, Served] = field(default_factory=dict)

    def add(self, path: str, body: bytes, **kwargs) -> str:
        self.routes["/" + path.lstrip("/")] = Served(body, **kwargs)
        return f"{self.base_url}/{path.lstrip('/')}"


@contextmanager
def local_http_server() -> Iterator[LocalServer]:
    """An HTTP server on 127.0.0.1 (port 0) in a daemon thread."""
    server_state = LocalServer(base_url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            served = server_state.routes.get(self.path)
            if served is None:
                self.send_error(404)
                return
            served.hits += 1
            body = served.body
            if served.corrupt:
                body = bytes(b ^ 0xFF for b in body[:1]) + body[1:]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if served.no_length:
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if served.hits <= served.truncate_first:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    """A local TCP port with nothing listening on it."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
