"""Downsampled ImageNet (Chrabaszcz, Loshchilov & Hutter, arXiv:1707.08819) at 16, 32 or 64 px.

Used by FlexConv (arXiv:2110.08059) for ImageNet-32 and the ImageNet-k cross-resolution runs.

Files: the official "npz" release (``Imagenet{k}_train_npz.zip`` / ``Imagenet{k}_val_npz.zip``
from https://image-net.org/download-images, which needs a login, so nothing is downloaded
here). Unzip both so that ``train_data_batch_1.npz`` ... ``train_data_batch_10.npz`` and
``val_data.npz`` lie in ``<data_dir>/Imagenet{k}/`` (also found: ``<data_dir>/Imagenet{k}_train``
/ ``_val`` (as unzipped), the ``*_npz`` variants, or ``<data_dir>`` itself). Each file holds
``data`` ``(n, 3*k*k)`` ``uint8`` channel-major, ``labels`` 1..1000 and ``mean``. The older
pickle release (same names without ``.npz``, same keys) is read too, without running code from
the pickles.

Names: ``Imagenet16``, ``Imagenet32``, ``Imagenet64`` fix the resolution; ``Imagenet-k`` reads
it from ``dataset.params.resolution`` ∈ {16, 32, 64} (default 32).

Splits: 10,000 training images (seeded with ``split_seed``; 10 % for smaller file sets) are held
out as the validation split; the official validation set (50,000 images) is the test split.
(The published FlexConv code had no validation split and selected on the official val set.)

Memory: the images stay ``uint8`` (3.8 GB at 32 px, 15.7 GB at 64 px) in one tensor; the
splits index into it without copies. The first load writes a cache
``<dir>/.ccnn_cache/imagenet{k}_v1.pt`` that later loads memory-map (no npz decoding).
Normalisation: the usual ImageNet mean (0.485, 0.456, 0.406) / std (0.229, 0.224, 0.225).
``dataset.augment=True`` (``train.augment=resnet``): random crop with symmetric padding k/8
(2, 4, 8 px) + horizontal flip, training batches only.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ccnn.data.base import (
    DATASETS,
    DataConfigError,
    DataOptions,
    DatasetMeta,
    DatasetSplits,
    check_data_type,
    check_labels,
    make_splits,
    read_cifar_pickle,
    reject_params,
)
from ccnn.data.cache import cached
from ccnn.data.download import DatasetNotFoundError, RemoteFile, not_found_message
from ccnn.data.transforms import (
    ImageBatchTransform,
    crop_padding,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESOLUTIONS = (16, 32, 64)
VAL_SIZE = 10_000
CACHE_VERSION = "imagenet-npz-v1"
DOWNLOAD_PAGE = "https://image-net.org/download-images"
TRAIN_FILES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11))
TEST_FILE = "val_data.npz"


def candidate_dirs(root: Path, k: int) -> list[Path]:
    """Directories searched (in order) for the npz files of resolution ``k``."""
    names = [f"Imagenet{k}", f"imagenet{k}", f"Imagenet{k}_train", f"Imagenet{k}_val"]
    names += [f"Imagenet{k}_train_npz", f"Imagenet{k}_val_npz"]
    dirs = [root / n for n in names]
    return [*dirs, *(d / n for d in dirs[:1] for n in names[2:]), root]


def locate(root: Path, k: int) -> dict[str, Path]:
    """Path of every needed file; :class:`DatasetNotFoundError` naming what is missing.

    Each file is accepted as ``<name>.npz`` (npz release) or ``<name>`` (pickle release).
    """
    found: dict[str, Path] = {}
    for name in (*TRAIN_FILES, TEST_FILE):
        for d in candidate_dirs(root, k):
            hits = [p for p in (d / name, d / name[: -len(".npz")]) if p.is_file()]
            if hits:
                found[name] = hits[0]
                break
    missing = [n for n in (*TRAIN_FILES, TEST_FILE) if n not in found]
    if missing:
        files = [RemoteFile(DOWNLOAD_PAGE, f"Imagenet{k}/{n}") for n in missing]
        raise DatasetNotFoundError(
            not_found_message(
                f"Imagenet{k}",
                root,
                files,
                "downsampled ImageNet files are missing; they cannot be downloaded automatically "
                "(image-net.org requires a login).",
                hint=(
                    f"Log in at {DOWNLOAD_PAGE}, download 'Imagenet{k}_train_npz.zip' and "
                    f"'Imagenet{k}_val_npz.zip' (Downsampled ImageNet {k}x{k}) and unzip both "
                    f"into {root / f'Imagenet{k}'}. The pickle release (files without .npz) "
                    "works too."
                ),
            )
        )
    return found


def read_batch(path: Path) -> dict[str, np.ndarray]:
    """``data`` and ``labels`` of one batch file (npz, or the pickle release)."""
    if path.suffix == ".npz":
        try:
            with np.load(path) as z:
                return {"data": z["data"], "labels": np.asarray(z["labels"])}
        except (OSError, KeyError, ValueError) as e:
            raise DataConfigError(f"{path}: not a downsampled-ImageNet npz batch ({e}).") from None
    batch = read_cifar_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise DataConfigError(f"{path}: no 'data'/'labels'; not a downsampled-ImageNet batch.")
    return {"data": np.asarray(batch["data"]), "labels": np.asarray(batch["labels"])}


def val_count(n: int) -> int:
    """Validation images held out of ``n`` training images: 10,000 (10 % for small sets)."""
    return min(VAL_SIZE, max(1, n // 10))


def _num_examples(path: Path) -> int:
    if path.suffix == ".npz":  # reads only the labels of the (lazy) npz archive
        with np.load(path) as z:
            return len(z["labels"])
    return len(read_batch(path)["labels"])


def read_batches(paths: list[Path], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate batch files into ``uint8`` ``(n, 3, k, k)`` and ``long`` labels 0..999.

    The result is preallocated (counting examples first), so peak memory is the result plus
    one batch file.
    """
    n = sum(_num_examples(p) for p in paths)
    x = torch.empty((n, 3, k, k), dtype=torch.uint8)
    y = torch.empty(n, dtype=torch.long)
    start = 0
    for p in paths:
        batch = read_batch(p)
        data, labels = batch["data"], batch["labels"].astype(np.int64).reshape(-1)
        if data.dtype != np.uint8 or data.shape != (len(labels), 3 * k * k):
            raise DataConfigError(
                f"{p}: 'data' has shape {data.shape} and dtype {data.dtype}; expected "
                f"({len(labels)}, {3 * k * k}) uint8 for {k}x{k} images. Is this the "
                f"Imagenet{k} release?"
            )
        if start + len(labels) > n:
            raise DataConfigError(f"{p}: the number of examples changed while reading.")
        x[start : start + len(labels)] = torch.from_numpy(data.reshape(-1, 3, k, k))
        y[start : start + len(labels)] = torch.from_numpy(labels) - 1
        start += len(labels)
    return x, check_labels(y, 1000, paths[0].parent)


class _DownsampledImageNet:
    params: ClassVar[tuple[str, ...]] = ("resolution",)
    name: ClassVar[str]
    resolution: ClassVar[int | None] = None

    @classmethod
    def _resolution(cls, opts: DataOptions) -> int:
        value = opts.param("resolution", None)
        if cls.resolution is not None:
            if value is not None and value != cls.resolution:
                raise DataConfigError(
                    f"dataset.params.resolution={value!r} conflicts with dataset.name="
                    f"{opts.name!r} ({cls.resolution} px); use dataset.name=Imagenet-k to choose "
                    "the resolution with dataset.params.resolution."
                )
            return cls.resolution
        value = 32 if value is None else value
        if value not in RESOLUTIONS:
            raise DataConfigError(
                f"dataset.params.resolution={value!r}: downsampled ImageNet exists only at "
                f"{list(RESOLUTIONS)} px."
            )
        return int(value)

    @classmethod
    def meta(cls, opts: DataOptions) -> DatasetMeta:
        check_data_type(opts, ("default",))
        reject_params(opts, ("grayscale", "noise_padded", "permuted"))
        k = cls._resolution(opts)
        extra = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "resolution": k, "top5": True}
        return DatasetMeta(3, 1000, 2, (3, k, k), "default", extra)

    @classmethod
    def read(cls, root: Path, k: int) -> dict[str, torch.Tensor]:
        found = locate(root, k)
        cache = found[TRAIN_FILES[0]].parent / ".ccnn_cache" / f"imagenet{k}_v1.pt"

        def build() -> dict[str, torch.Tensor]:
            train_x, train_y = read_batches([found[n] for n in TRAIN_FILES], k)
            test_x, test_y = read_batches([found[TEST_FILE]], k)
            return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

        return cached(cache, f"{CACHE_VERSION}-{k}", build, mmap=True)

    @classmethod
    def load(cls, opts: DataOptions) -> DatasetSplits:
        meta = cls.meta(opts)
        k = meta.extra["resolution"]
        data = cls.read(opts.root, k)
        n_val = val_count(len(data["train_x"]))
        transform = ImageBatchTransform(
            IMAGENET_MEAN,
            IMAGENET_STD,
            augment="crop_flip" if opts.augment else None,
            crop_padding=crop_padding(k),
        )
        return make_splits(data, n_val, opts, meta, transform)


@DATASETS.register("Imagenet16", "ImageNet16", "imagenet16")
class Imagenet16(_DownsampledImageNet):
    name, resolution = "Imagenet16", 16


@DATASETS.register("Imagenet32", "ImageNet32", "imagenet32")
class Imagenet32(_DownsampledImageNet):
    name, resolution = "Imagenet32", 32


@DATASETS.register("Imagenet64", "ImageNet64", "imagenet64")
class Imagenet64(_DownsampledImageNet):
    name, resolution = "Imagenet64", 64


@DATASETS.register("Imagenet-k", "ImageNet-k", "imagenet-k")
class ImagenetK(_DownsampledImageNet):
    name = "Imagenet-k"
