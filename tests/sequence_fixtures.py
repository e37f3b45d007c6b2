"""Writers of tiny, valid files in the official on-disk formats of the sequence datasets.

Speech Commands v0.02 (wav tree + list files), LRA ListOps TSVs, aclImdb text files, LRA
PathFinder PNGs + text ``metadata/*.npy``, and UEA ``.ts`` files; plus a local HTTP server for
download tests.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
import wave
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SPEECH_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


# ---------------------------------------------------------------------------------------------
# Speech Commands


def write_wav(path: Path, samples: np.ndarray, sample_rate: int = 16_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.astype("<i2").tobytes())


def speech_clip(label: int, index: int, n: int = 16_000) -> np.ndarray:
    """A class-dependent tone plus seeded noise, as int16."""
    rng = np.random.default_rng(1000 * label + index)
    t = np.arange(n) / 16_000
    tone = 0.3 * np.sin(2 * np.pi * (300 + 250 * label) * t)
    return np.round((tone + 0.05 * rng.standard_normal(n)) * 2**15 * 0.8).astype(np.int16)


def write_speech_commands(root: Path, per_class: int = 4, short_per_class: int = 1) -> Path:
    """``root/SpeechCommands/speech_commands_v0.02`` with ``per_class`` full clips per word,
    ``short_per_class`` clips of other lengths, an unused word and background noise."""
    base = root / "SpeechCommands" / "speech_commands_v0.02"
    names: list[str] = []
    for label, word in enumerate(SPEECH_WORDS):
        for i in range(per_class):
            name = f"{word}/{i:08x}_nohash_0.wav"
            write_wav(base / name, speech_clip(label, i))
            names.append(name)
        for i in range(short_per_class):
            write_wav(
                base / f"{word}/short{i:04x}_nohash_0.wav", speech_clip(label, 99, 12_000 + i)
            )
    write_wav(base / "bed/00000000_nohash_0.wav", speech_clip(0, 0))  # not one of the 10 words
    write_wav(base / "_background_noise_/noise.wav", speech_clip(0, 1, 32_000))
    (base / "validation_list.txt").write_text("\n".join(names[::7]) + "\n")
    (base / "testing_list.txt").write_text("\n".join(names[3::7]) + "\n")
    return base


# ---------------------------------------------------------------------------------------------
# LRA


def random_listops(rng: np.random.Generator, depth: int = 3) -> str:
    if depth == 0 or rng.random() < 0.3:
        return str(int(rng.integers(10)))
    op = ["[MIN", "[MAX", "[MED", "[SM"][int(rng.integers(4))]
    args = " ".join(random_listops(rng, depth - 1) for _ in range(int(rng.integers(2, 4))))
    return f"( {op} {args} ] )"


def write_listops(
    root: Path,
    sizes: Sequence[int] = (30, 10, 10),
    extra_rows: dict[str, list[tuple[str, int]]] | None = None,
) -> Path:
    base = root / "lra_release" / "listops-1000"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val", "test"), sizes):
        rows = [(random_listops(rng), int(rng.integers(10))) for _ in range(n)]
        rows += (extra_rows or {}).get(split, [])
        text = "Source\tTarget\n" + "".join(f"{s}\t{t}\n" for s, t in rows)
        (base / f"basic_{split}.tsv").write_text(text)
    return base


def write_imdb(root: Path, per_class: int = 10) -> Path:
    base = root / "aclImdb"
    rng = np.random.default_rng(0)
    words = ["great", "bad", "movie", "plot", "actors", "café", "boring", "<br />"]
    for split in ("train", "test"):
        for sentiment in ("neg", "pos"):
            d = base / split / sentiment
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                n = 5000 if i == 0 else int(rng.integers(5, 60))
                text = " ".join(words[int(k)] for k in rng.integers(len(words), size=n))
                (d / f"{i}_{int(rng.integers(1, 11))}.txt").write_text(text, encoding="utf-8")
    (base / "train" / "unsup").mkdir(parents=True, exist_ok=True)
    (base / "train" / "unsup" / "0_0.txt").write_text("unlabelled")
    return base


def pathfinder_image(index: int, res: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    return rng.integers(0, 256, size=(res, res), dtype=np.uint8)


def write_pathfinder(
    root: Path, res: int = 32, n_files: int = 3, per_file: int = 10, empty: int = 0
) -> tuple[Path, list[tuple[str, int]]]:
    """LRA layout: ``imgs/<i>/sample_<j>.png`` and text ``metadata/<i>.npy`` lines
    ``imgs/<i> sample_<j>.png <j> <label> ...``; the first ``empty`` listed images are empty."""
    base = root / "lra_release" / f"pathfinder{res}" / "curv_contour_length_14"
    (base / "metadata").mkdir(parents=True, exist_ok=True)
    listed: list[tuple[str, int]] = []
    k = 0
    for i in range(n_files):
        lines = []
        (base / "imgs" / str(i)).mkdir(parents=True, exist_ok=True)
        for j in range(per_file):
            label = (i + j) % 2
            rel = f"imgs/{i}/sample_{j}.png"
            if k < empty:
                (base / rel).write_bytes(b"")
            else:
                Image.fromarray(pathfinder_image(k, res)).save(base / rel)
            listed.append((rel, label))
            lines.append(f"imgs/{i} sample_{j}.png {j} {label} 14 1.8 1 1 4 1")
            k += 1
        (base / "metadata" / f"{i}.npy").write_text("\n".join(lines) + "\n")
    return base, listed


# ---------------------------------------------------------------------------------------------
# UEA .ts


def write_ts(
    path: Path,
    name: str,
    series: Sequence[np.ndarray],
    labels: Sequence[str],
    class_values: Sequence[str],
) -> None:
    """A ``.ts`` file; ``series[i]`` is ``(c, l_i)`` (``nan`` written as ``?``)."""
    c = series[0].shape[0]
    equal = len({s.shape[1] for s in series}) == 1
    missing = any(np.isnan(s).any() for s in series)
    head = [
        "#Toy data set written by the ccnn tests",
        f"@problemName {name}",
        "@timeStamps false",
        f"@missing {str(missing).lower()}",
        f"@univariate {str(c == 1).lower()}",
        f"@dimensions {c}",
        f"@equalLength {str(equal).lower()}",
    ]
    if equal:
        head.append(f"@seriesLength {series[0].shape[1]}")
    head += [f"@classLabel true {' '.join(class_values)}", "@data"]
    rows = []
    for s, y in zip(series, labels):
        chans = [",".join("?" if np.isnan(v) else f"{v:.6f}" for v in ch) for ch in s]
        rows.append(":".join(chans) + f":{y}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(head + rows) + "\n")


def toy_series(
    n: int, channels: int, classes: Sequence[str], min_len: int, max_len: int, seed: int
) -> tuple[list[np.ndarray], list[str]]:
    """Variable-length series whose mean depends on the class; the first one has ``max_len``."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for i in range(n):
        k = i % len(classes)
        length = max_len if i == 0 else int(rng.integers(min_len, max_len + 1))
        s = rng.standard_normal((channels, length)) + 3.0 * k + np.arange(channels)[:, None]
        series.append(s)
        labels.append(classes[k])
    return series, labels


def write_uea(
    root: Path,
    name: str,
    channels: int = 2,
    classes: Sequence[str] = ("1", "2", "10"),
    n_train: int = 30,
    n_test: int = 12,
    min_len: int = 5,
    max_len: int = 20,
) -> dict[str, tuple[list[np.ndarray], list[str]]]:
    out = {}
    for split, n, seed in (("TRAIN", n_train, 0), ("TEST", n_test, 1)):
        series, labels = toy_series(n, channels, classes, min_len, max_len, seed)
        write_ts(root / "UEA" / name / f"{name}_{split}.ts", name, series, labels, classes)
        out[split] = (series, labels)
    return out


# ---------------------------------------------------------------------------------------------
# local HTTP server


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (random port); yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass
