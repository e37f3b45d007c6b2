"""Long Range Arena (Tay et al. 2021, arXiv:2011.04006): ListOps, IMDB (LRA Text), PathFinder.

LRA Image is grayscale sequential CIFAR-10 (``CIFAR10`` with ``params.grayscale``).

Encoding (the published CCNN code): token ids are fed as ONE float channel, ``(1, L)``, with no
embedding. ``meta.extra`` carries ``vocab_size``, ``pad_id`` (0) and ``token_ids=True`` so a model
can opt into a learned embedding (``x.long()`` recovers the ids exactly). Tokens are stored as
``uint8`` and turned into floats by the batch transform.

* ``ListOps``: ``<root>/lra_release/listops-1000/basic_{train,val,test}.tsv`` (columns
  ``Source``/``Target``). Parentheses are dropped, the rest is split on whitespace and mapped with
  the fixed vocabulary :data:`LISTOPS_VOCAB` (pad 0, EOS 1, ``[MIN [MAX [MED [SM ]`` and the
  digits 0-9; 17 ids), EOS appended, truncated/padded to 2048. 10 classes. The official
  ``basic_val.tsv`` is the validation split.
* ``IMDB`` (LRA Text): ``<root>/aclImdb/{train,test}/{pos,neg}/*.txt`` (official aclImdb v1
  layout; neg = 0, pos = 1). Character level: the UTF-8 byte values of the raw review (NUL bytes
  removed so that 0 is only padding), truncated/padded to 4096, no EOS; ``vocab_size`` 256.
  IMDB has no validation split, and LRA (and the S4/CCNN code) used the TEST set for model
  selection. By default (``params.lra_val="train"``) we hold out a stratified
  ``params.val_fraction`` (0.1) of the official train set instead; ``params.lra_val="test"``
  reproduces the published protocol (validation = test).
* ``PathFinder``: ``<root>/lra_release/pathfinder{32,64,128,256}/curv_contour_length_14/`` (the
  "hard" level) with ``imgs/<i>/sample_<j>.png`` and ``metadata/<i>.npy``. Despite the suffix the
  metadata files are plain text, one image per line: ``imgs/<i> sample_<j>.png <?> <label> ...``
  (the LRA release format). Binary; seeded stratified 80/10/10 split; resolution from
  ``params.resolution``. ``data_type=sequence`` → ``(1, res²)``, ``default`` → ``(1, res, res)``.
  Pixels are scaled to [0, 1] and normalised with mean 0.5 / std 0.5 (range [-1, 1]), as in the
  S4 code. Resolutions up to 64 are held in memory (cached ``uint8``); 128 and 256 (3.3 / 13 GB)
  are read from the PNGs on the fly. Unreadable/empty PNGs (the release has at least one) are
  skipped when held in memory and read as blank images when read on the fly.

Unset params (missing, ``None``, ``""`` or ``-1``) take the defaults named here.

Downloads: the LRA release (``lra_release.gz``, a ~7 GB tar.gz holding ``lra_release/``) and
aclImdb (``aclImdb_v1.tar.gz``), extracted with :func:`ccnn.data.download.safe_extract`.
Tokenised tensors are cached next to the data (rebuilt when stale or corrupt).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, TensorDataset

from ccnn.data.base import (
    DATASETS,
    DataConfigError,
    DataOptions,
    DatasetMeta,
    DatasetSplits,
    check_data_type,
    param,
    stratified_split,
)
from ccnn.data.cache import cached
from ccnn.data.download import (
    DatasetNotFoundError,
    RemoteFile,
    fetch_extracted,
)
from ccnn.data.transforms import ImageBatchTransform

LRA_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
LRA_ARCHIVE = "lra_release.tar.gz"  # saved under this name: it is a gzipped tar
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_ARCHIVE = "aclImdb_v1.tar.gz"

PAD_ID, EOS_ID = 0, 1
LISTOPS_TOKENS = ("[MIN", "[MAX", "[MED", "[SM", "]", *map(str, range(10)))
LISTOPS_VOCAB: dict[str, int] = {tok: i + 2 for i, tok in enumerate(LISTOPS_TOKENS)}
"""Fixed ListOps vocabulary: pad 0, EOS 1, operators/bracket/digits 2..16."""
LISTOPS_LEN, IMDB_LEN = 2048, 4096
PATHFINDER_RESOLUTIONS = (32, 64, 128, 256)
PATHFINDER_LEVEL = "curv_contour_length_14"
PATHFINDER_IN_MEMORY_MAX = 64

LISTOPS_CACHE_VERSION = f"listops-v1:len={LISTOPS_LEN}:eos:vocab={','.join(LISTOPS_TOKENS)}"
IMDB_CACHE_VERSION = f"imdb-bytes-v1:len={IMDB_LEN}:no-nul"


class TokenTransform:
    """Batch transform: ``uint8`` token ids ``(b, 1, l)`` → float ids (no scaling)."""

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        return x.float()


def _sequence_meta(opts: DataOptions, length: int, classes: int, vocab: int) -> DatasetMeta:
    check_data_type(opts, ("default", "sequence"))
    extra = {"vocab_size": vocab, "pad_id": PAD_ID, "token_ids": True, "max_length": length}
    return DatasetMeta(1, classes, 1, (1, length), opts.data_type, extra)


def _lra_release(opts: DataOptions, subdir: str, present, expected: str) -> Path:
    """Ensure ``<root>/lra_release/<subdir>`` exists (fetching the LRA release if allowed)."""
    root = Path(opts.root)
    fetch_extracted(
        dataset=opts.name,
        present=present,
        archive_dir=root,
        remote=RemoteFile(LRA_URL, LRA_ARCHIVE),
        extract_to=root,
        download=opts.download,
        expected=expected,
    )
    return root / "lra_release" / subdir


# ----------------------------------------------------------------------------------------------
# ListOps


def tokenize_listops(source: str) -> list[int]:
    """Ids of a ListOps expression: parentheses dropped, whitespace tokens, EOS appended."""
    ids = []
    for tok in source.replace("(", " ").replace(")", " ").split():
        try:
            ids.append(LISTOPS_VOCAB[tok])
        except KeyError:
            raise DataConfigError(
                f"ListOps: unknown token {tok!r} (known: {list(LISTOPS_VOCAB)}); the TSV files "
                "are not the LRA listops-1000 release."
            ) from None
    return ids[: LISTOPS_LEN - 1] + [EOS_ID]


def _pad_rows(rows: list[list[int]] | list[bytes], length: int) -> torch.Tensor:
    out = np.zeros((len(rows), length), dtype=np.uint8)
    for i, r in enumerate(rows):
        r = np.frombuffer(r, dtype=np.uint8) if isinstance(r, bytes) else np.asarray(r)
        out[i, : len(r)] = r[:length]
    return torch.from_numpy(out)


def read_listops_tsv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (n, 2048) uint8, labels (n,))`` of one ListOps TSV file."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or "Source" not in header or "Target" not in header:
            raise DataConfigError(f"{path}: expected a header with columns Source and Target.")
        src, tgt = header.index("Source"), header.index("Target")
        rows, labels = [], []
        for line in reader:
            if not line:
                continue
            rows.append(tokenize_listops(line[src]))
            labels.append(int(line[tgt]))
    return _pad_rows(rows, LISTOPS_LEN), torch.tensor(labels, dtype=torch.long)


@DATASETS.register("ListOps", "listops")
class ListOps:
    """LRA ListOps: ``(1, 2048)`` float token ids, 10 classes (the release's own val split)."""

    params: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def meta(cls, opts: DataOptions) -> DatasetMeta:
        meta = _sequence_meta(opts, LISTOPS_LEN, 10, len(LISTOPS_VOCAB) + 2)
        meta.extra["eos_id"] = EOS_ID
        return meta

    @classmethod
    def load(cls, opts: DataOptions) -> DatasetSplits:
        meta = cls.meta(opts)
        base = Path(opts.root) / "lra_release" / "listops-1000"
        files = {s: base / f"basic_{s}.tsv" for s in ("train", "val", "test")}
        _lra_release(
            opts,
            "listops-1000",
            lambda: all(p.is_file() for p in files.values()),
            f"{base}/basic_{{train,val,test}}.tsv",
        )

        def build() -> dict[str, torch.Tensor]:
            out = {}
            for split, path in files.items():
                out[f"{split}_x"], out[f"{split}_y"] = read_listops_tsv(path)
            return out

        data = cached(base / "listops_tokens.pt", LISTOPS_CACHE_VERSION, build)
        sets = [
            TensorDataset(data[f"{s}_x"].unsqueeze(1), data[f"{s}_y"])  # (n, 1, 2048)
            for s in ("train", "val", "test")
        ]
        return DatasetSplits(*sets, meta=meta, batch_transform=TokenTransform())


# ----------------------------------------------------------------------------------------------
# IMDB


def _read_imdb_split(base: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    rows, labels = [], []
    for label, sentiment in enumerate(("neg", "pos")):
        for path in sorted((base / split / sentiment).glob("*.txt")):
            rows.append(path.read_bytes().replace(b"\x00", b"")[:IMDB_LEN])
            labels.append(label)
    if not rows:
        raise DatasetNotFoundError(f"Dataset 'IMDB': no reviews found in {base / split}.")
    return _pad_rows(rows, IMDB_LEN), torch.tensor(labels, dtype=torch.long)


def _val_protocol(opts: DataOptions) -> tuple[str, float]:
    mode = param(opts, "lra_val", "train")
    frac = float(param(opts, "val_fraction", 0.1))
    if mode not in ("train", "test"):
        raise DataConfigError(
            f"dataset.params.lra_val={mode!r}: use 'train' (hold out part of the training set, "
            "default) or 'test' (LRA protocol: validate on the test set)."
        )
    if not 0.0 < frac < 1.0:
        raise DataConfigError(f"dataset.params.val_fraction={frac} must be in (0, 1).")
    return mode, frac


@DATASETS.register("IMDB", "imdb")
class IMDB:
    """LRA Text: byte-level IMDB reviews ``(1, 4096)`` as float ids, binary sentiment.

    Params: ``lra_val`` (``"train"`` default | ``"test"``), ``val_fraction`` (0.1).
    """

    params: ClassVar[tuple[str, ...]] = ("lra_val", "val_fraction")

    @classmethod
    def meta(cls, opts: DataOptions) -> DatasetMeta:
        _val_protocol(opts)
        return _sequence_meta(opts, IMDB_LEN, 2, 256)

    @classmethod
    def load(cls, opts: DataOptions) -> DatasetSplits:
        meta = cls.meta(opts)
        mode, frac = _val_protocol(opts)
        root = Path(opts.root)
        base = root / "aclImdb"
        dirs = [base / s / c for s in ("train", "test") for c in ("neg", "pos")]
        fetch_extracted(
            dataset="IMDB",
            present=lambda: all(d.is_dir() for d in dirs),
            archive_dir=root,
            remote=RemoteFile(IMDB_URL, IMDB_ARCHIVE, md5=IMDB_MD5),
            extract_to=root,
            download=opts.download,
            expected=f"{base}/{{train,test}}/{{pos,neg}}/*.txt",
        )

        def build() -> dict[str, torch.Tensor]:
            out = {}
            for split in ("train", "test"):
                out[f"{split}_x"], out[f"{split}_y"] = _read_imdb_split(base, split)
            return out

        data = cached(base / "imdb_bytes.pt", IMDB_CACHE_VERSION, build)
        x, y = data["train_x"].unsqueeze(1), data["train_y"]  # (n, 1, 4096)
        test = TensorDataset(data["test_x"].unsqueeze(1), data["test_y"])
        if mode == "test":
            train, val = TensorDataset(x, y), test
        else:
            tr, va = stratified_split(y, (1.0 - frac, frac), seed=opts.split_seed)
            train, val = TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va])
        meta.extra["val_protocol"] = mode
        return DatasetSplits(train, val, test, meta=meta, batch_transform=TokenTransform())


# ----------------------------------------------------------------------------------------------
# PathFinder


def _resolution(opts: DataOptions) -> int:
    res = param(opts, "resolution", 32)
    try:
        res = int(res)
    except (TypeError, ValueError):
        res = None
    if res not in PATHFINDER_RESOLUTIONS:
        raise DataConfigError(
            f"dataset.params.resolution={opts.param('resolution')!r} is not available for "
            f"PathFinder; use one of {list(PATHFINDER_RESOLUTIONS)}."
        )
    return res


def read_pathfinder_index(base: Path) -> tuple[list[Path], torch.Tensor]:
    """Image paths and labels listed by ``base/metadata/*.npy`` (text lines, sorted by file id)."""
    meta_files = sorted((base / "metadata").glob("*.npy"), key=lambda p: (len(p.stem), p.stem))
    paths, labels = [], []
    for mf in meta_files:
        for line in mf.read_text().splitlines():
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 4:
                raise DataConfigError(f"{mf}: malformed metadata line {line!r}.")
            paths.append(base / fields[0] / fields[1])
            labels.append(int(fields[3]))
    return paths, torch.tensor(labels, dtype=torch.long)


def _read_png(path: Path, res: int) -> np.ndarray | None:
    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("L"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError):
        return None
    if arr.shape != (res, res):
        raise DataConfigError(f"{path}: expected a {res}x{res} image, got {arr.shape}.")
    return arr


class PathFinderFiles(Dataset):
    """Reads PathFinder PNGs on access: ``(1, res, res) uint8``; unreadable files give zeros."""

    def __init__(self, paths: list[Path], labels: torch.Tensor, res: int):
        self.paths, self.labels, self.res = paths, labels, res

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        arr = _read_png(self.paths[i], self.res)
        if arr is None:
            arr = np.zeros((self.res, self.res), dtype=np.uint8)
        return torch.from_numpy(arr).unsqueeze(0), self.labels[i]


@DATASETS.register("PathFinder", "Pathfinder", "pathfinder")
class PathFinder:
    """LRA PathFinder (hard level): binary, ``(1, res²)`` sequences or ``(1, res, res)`` images.

    Params: ``resolution`` (32, 64, 128, 256).
    """

    params: ClassVar[tuple[str, ...]] = ("resolution",)

    @classmethod
    def meta(cls, opts: DataOptions) -> DatasetMeta:
        check_data_type(opts, ("default", "sequence"))
        res = _resolution(opts)
        extra = {"resolution": res, "level": PATHFINDER_LEVEL}
        if opts.data_type == "sequence":
            return DatasetMeta(1, 2, 1, (1, res * res), "sequence", extra)
        return DatasetMeta(1, 2, 2, (1, res, res), "default", extra)

    @classmethod
    def load(cls, opts: DataOptions) -> DatasetSplits:
        meta = cls.meta(opts)
        res = meta.extra["resolution"]
        sub = f"pathfinder{res}/{PATHFINDER_LEVEL}"
        base = Path(opts.root) / "lra_release" / sub
        _lra_release(
            opts,
            sub,
            lambda: (base / "metadata").is_dir(),
            f"{base}/metadata/*.npy and {base}/imgs/",
        )
        paths, labels = read_pathfinder_index(base)
        if not paths:
            raise DatasetNotFoundError(f"Dataset 'PathFinder': no metadata entries in {base}.")
        if res <= PATHFINDER_IN_MEMORY_MAX:

            def build() -> dict[str, torch.Tensor]:
                imgs, ys = [], []
                for p, lab in zip(paths, labels.tolist()):
                    arr = _read_png(p, res)
                    if arr is not None:
                        imgs.append(arr)
                        ys.append(lab)
                if len(imgs) < len(paths):
                    warnings.warn(
                        f"PathFinder: skipped {len(paths) - len(imgs)} unreadable "
                        f"image(s) in {base}.",
                        stacklevel=2,
                    )
                return {
                    "images": torch.from_numpy(np.stack(imgs)).unsqueeze(1),
                    "labels": torch.tensor(ys, dtype=torch.long),
                }

            version = f"pathfinder-v1:res={res}:level={PATHFINDER_LEVEL}:n={len(paths)}"
            data = cached(base / "pathfinder_images.pt", version, build)
            x, y = data["images"], data["labels"]  # (n, 1, res, res) uint8
            full: Dataset = TensorDataset(x, y)
        else:
            y = labels
            full = PathFinderFiles(paths, labels, res)
        tr, va, te = stratified_split(y, (0.8, 0.1, 0.1), seed=opts.split_seed)
        if isinstance(full, TensorDataset):
            sets = [TensorDataset(x[i], y[i]) for i in (tr, va, te)]
        else:
            sets = [torch.utils.data.Subset(full, i.tolist()) for i in (tr, va, te)]
        transform = ImageBatchTransform(
            mean=(0.5,), std=(0.5,), sequence=opts.data_type == "sequence"
        )
        return DatasetSplits(*sets, meta=meta, batch_transform=transform)
