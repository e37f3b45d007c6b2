"""Image benchmarks in their official on-disk formats: MNIST, CIFAR-10, CIFAR-100, STL-10.

Used by CCNN (Knigge, Romero et al., "Modelling Long Range Dependencies in ND: From Task-Specific
to a General Purpose CNN", arXiv:2301.10540) and FlexConv (Romero et al., "FlexConv: Continuous
Kernel Convolutions with Differentiable Kernel Sizes", arXiv:2110.08059).

Images are kept as ``uint8`` ``(n, c, h, w)`` tensors; normalisation, resizing, augmentation and
the image → sequence layouts run batched on the training device
(:class:`~ccnn.data.transforms.ImageBatchTransform`). Validation splits are held out from the
official training set with ``opts.split_seed`` and are never augmented; the official test set is
the test split.

============ ======================================= ============ ==============================
family       files under ``dataset.data_dir``        splits       inputs
============ ======================================= ============ ==============================
MNIST        ``MNIST/raw/{train,t10k}-*-ubyte[.gz]`` 55k/5k/10k   (1,28,28) · sequence (1,784)
CIFAR10      ``cifar-10-batches-py/``                45k/5k/10k   (3,32,32) · sequence (3,1024)
CIFAR100     ``cifar-100-python/``                   45k/5k/10k   as CIFAR10, 100 classes
STL10        ``stl10_binary/{train,test}_{X,y}.bin`` 4.5k/0.5k/8k (3,96,96)
============ ======================================= ============ ==============================

``dataset.params`` used here:

* ``permuted`` (MNIST, CIFAR; sequence only): one fixed permutation of the sequence positions,
  drawn with ``opts.split_seed``, applied identically to train/val/test and stored in
  ``DatasetSplits.state["permutation"]`` so it travels with checkpoints (the published code drew
  a new one at test time).
* ``grayscale`` (CIFAR): ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` rounded to ``uint8``, one
  channel normalised with (122.6/255, 61.0/255) (LRA Image; the same constants for CIFAR-100).
* ``noise_padded`` (CIFAR, sequence only): npCIFAR10 (Chang et al., 2019): one step per image row
  with the rows of the channels concatenated as features (``3*32 = 96``), then 968 steps of
  standard-normal noise (in normalised units) → ``(96, 1000)`` (with ``resolution`` r:
  ``(c*r, r + 968)``). Training batches get fresh noise at every step; evaluation noise comes
  from a generator re-seeded with ``split_seed`` at every batch, so val/test numbers are
  reproducible for a fixed evaluation batch size.
* ``resolution`` (CIFAR, STL10; default 32 / 96 = native): resize every image to this size on the
  device (bilinear, antialiased when downsampling), for cross-resolution experiments and for the
  published STL-10 setting (256). The random-crop padding scales with it: ``round(size / 8)``
  (4 at 32, 12 at 96, 32 at 256). MNIST is always 28x28 and ignores ``resolution``.

``dataset.augment=True`` (CIFAR, STL10): random crop after symmetric padding + horizontal flip,
training batches only. MNIST has no augmentation defined (``augment=True`` is an error).
Normalisation: MNIST (0.1307, 0.3081); CIFAR-10/100 the per-channel constants of the papers;
STL-10 per-channel mean/std of its training split (computed at load time, reported in
``DatasetSplits.meta.extra``).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ccnn.data.base import (
    DATASETS,
    DataConfigError,
    DataOptions,
    DatasetMeta,
    DatasetSplits,
    bool_param,
    check_data_type,
    check_labels,
    make_splits,
    read_cifar_pickle,
    reject_params,
    resolution_param,
    split_train_val,
)
from ccnn.data.download import RemoteFile, fetch, safe_extract
from ccnn.data.transforms import (
    ImageBatchTransform,
    crop_padding,
)

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
GRAY_MEAN, GRAY_STD = (122.6 / 255.0,), (61.0 / 255.0,)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
NOISE_PAD_STEPS = 968
"""Noise steps appended to the 32 row-steps of npCIFAR10 (total 1000)."""


# --------------------------------------------------------------------------------------------
# shared helpers


def val_count(n: int, official_n: int, official_val: int) -> int:
    """The official validation size, or the same fraction of ``n`` for other sizes."""
    if n == official_n:
        return official_val
    return min(n - 1, max(1, round(n * official_val / official_n)))


def to_grayscale(x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """``uint8`` ``(n, 3, h, w)`` → ``uint8`` ``(n, 1, h, w)`` luma (ITU-R 601), rounded."""
    w = torch.tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)
    out = torch.empty((x.shape[0], 1, *x.shape[2:]), dtype=torch.uint8)
    for i in range(0, x.shape[0], chunk):
        g = (x[i : i + chunk].float() * w).sum(1, keepdim=True)  # (b, 1, h, w)
        out[i : i + chunk] = g.round().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(
    x: torch.Tensor, chunk: int = 1024
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``uint8`` images in the [0, 1] scale."""
    c = x.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, x.shape[0], chunk):
        v = x[i : i + chunk].to(torch.float64).div_(255.0).transpose(0, 1).reshape(c, -1)
        s += v.sum(1)
        s2 += (v * v).sum(1)
    count = x.shape[0] * x[0, 0].numel()
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def fixed_permutation(length: int, seed: int) -> torch.Tensor:
    """The one permutation of ``length`` positions used for permuted sequences (seeded)."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# MNIST

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    try:
        with gzip.open(path, "rb") if gz else open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataConfigError(f"{path}: cannot read ({e}); delete it and download again.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataConfigError(f"{path}: not an IDX file (bad magic number).")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)) * dtype.itemsize:
        raise DataConfigError(
            f"{path}: header says shape {tuple(dims.tolist())} but the file holds "
            f"{len(raw) - offset} bytes of data (truncated?)."
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims.tolist())


@DATASETS.register("MNIST", "mnist")
class MNIST:
    """MNIST (LeCun et al., 1998): images, sequential (sMNIST) or permuted (pMNIST) sequences."""

    mirrors: ClassVar[tuple[str, ...]] = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    """Base URLs tried in order (patchable, e.g. by tests)."""
    resources: ClassVar[dict[str, str | None]] = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }
    """File name → md5 of the gzipped file."""
    params: ClassVar[tuple[str, ...]] = ("permuted",)
    folder = "MNIST/raw"
    official_train, official_val = 60_000, 5_000

    @classmethod
    def meta(cls, opts: DataOptions) -> DatasetMeta:
        check_data_type(opts, ("default", "sequence"))
        reject_params(opts, ("noise_padded",))
        if opts.data_type != "sequence":
            reject_params(opts, ("permuted",), " (permutations act on sequences)")
        if opts.augment:
            raise DataConfigError(
                "dataset.augment=true: no augmentation is defined for MNIST (the published "
                "experiments use none); set dataset.augment=false."
            )
        extra = {"mean": MNIST_MEAN, "std": MNIST_STD, "native_resolution": 28}
        if opts.data_type == "sequence":
            return DatasetMeta(1, 10, 1, (1, 784), "sequence", extra)
        return DatasetMeta(1, 10, 2, (1, 28, 28), "default", extra)

    @classmethod
    def remote_files(cls) -> list[RemoteFile]:
        base, *rest = cls.mirrors
        return [
            RemoteFile(base + f, f, md5=md5, mirrors=tuple(m + f for m in rest))
            for f, md5 in cls.resources.items()
        ]

    @classmethod
    def read(cls, root: Path, download: bool) -> dict[str, torch.Tensor]:
        """The four IDX files as tensors (uncompressed copies are used when present)."""
        d = root / cls.folder
        wanted = [f for f in cls.remote_files() if not (d / f.filename[:-3]).is_file()]
        if wanted:
            fetch(d, wanted, download=download, dataset="MNIST")

        def arr(name: str) -> np.ndarray:
            plain = d / name[:-3]
            return read_idx(plain if plain.is_file() else d / name)

        out = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images = arr(f"{prefix}-images-idx3-ubyte.gz")
            labels = arr(f"{prefix}-labels-idx1-ubyte.gz")
            if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
                raise DataConfigError(
                    f"{d}: {prefix} images {images.shape} and labels {labels.shape} do not form "
                    "an MNIST split (n x 28 x 28 images, n labels)."
                )
            out[f"{split}_x"] = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)
            y = torch.from_numpy(labels.astype(np.int64))
            out[f"{split}_y"] = check_labels(y, 10, d / f"{prefix}-labels-idx1-ubyte")
        return out

    @classmethod
    def load(cls, opts: DataOptions) -> DatasetSplits:
        meta = cls.meta(opts)
        data = cls.read(opts.root, opts.download)
        sequence = opts.data_type == "sequence"
        state: dict[str, Any] = {}
        permutation = None
        if sequence and bool_param(opts, "permuted"):
            permutation = state["permutation"] = fixed_permutation(784, opts.split_seed)
        transform = ImageBatchTransform(
            MNIST_MEAN, MNIST_STD, sequence=sequence, permutation=permutation
        )
        n_val = val_count(len(data["train_x"]), cls.official_train, cls.official_val)
        return make_splits(data, n_val, opts, meta, transform, state)


# --------------------------------------------------------------------------------------------
# CIFAR


class _CIFAR:
    """CIFAR-10/100 (Krizhevsky, 2009) from the python pickle batches."""

    name: ClassVar[str]
    url: ClassVar[str]
    md5: ClassVar[str]
    mirrors: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[tuple[str, ...]] = ("grayscale", "noise_padded", "permuted", "resolution")
    folder: ClassVar[str]
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    label_key: ClassVar[str]
    num_classes: ClassVar[int]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    official_train, official_val = 50_000, 5_000

    @classmethod
    def _options(cls, opts: DataOptions) -> tuple[bool, bool, bool, int]:
        check_data_type(opts, ("default", "sequence"))
        gray, noise, perm = (bool_param(opts, k) for k in ("grayscale", "noise_padded", "permuted"))
        if opts.data_type != "sequence":
            reject_params(opts, ("noise_padded", "permuted"), " (they define sequence tasks)")
        return gray, noise, perm, resolution_param(opts, 32)

    @classmethod
    def meta(cls, opts: DataOptions) -> DatasetMeta:
        gray, noise, _, res = cls._options(opts)
        c = 1 if gray else 3
        extra = {
            "mean": GRAY_MEAN if gray else cls.mean,
            "std": GRAY_STD if gray else cls.std,
            "resolution": res,
            "native_resolution": 32,
        }
        if opts.data_type == "sequence":
            shape = (c * res, res + NOISE_PAD_STEPS) if noise else (c, res * res)
            return DatasetMeta(shape[0], cls.num_classes, 1, shape, "sequence", extra)
        return DatasetMeta(c, cls.num_classes, 2, (c, res, res), "default", extra)

    @classmethod
    def archive(cls) -> RemoteFile:
        return RemoteFile(cls.url, cls.url.rsplit("/", 1)[-1], md5=cls.md5, mirrors=cls.mirrors)

    @classmethod
    def read(cls, root: Path, download: bool) -> dict[str, torch.Tensor]:
        d = root / cls.folder
        names = (*cls.train_files, *cls.test_files)
        if not all((d / n).is_file() for n in names):
            (archive,) = fetch(root, [cls.archive()], download=download, dataset=cls.name)
            safe_extract(archive, root)
            missing = [n for n in names if not (d / n).is_file()]
            if missing:
                raise DataConfigError(
                    f"{archive} did not contain {cls.folder}/{missing[0]}; the archive is not the "
                    f"official {cls.name} python version ({cls.url})."
                )
        out = {}
        for split, files in (("train", cls.train_files), ("test", cls.test_files)):
            xs, ys = [], []
            for n in files:
                batch = read_cifar_pickle(d / n)
                if "data" not in batch or cls.label_key not in batch:
                    raise DataConfigError(
                        f"{d / n}: missing 'data' or {cls.label_key!r}; not a {cls.name} batch."
                    )
                x = np.asarray(batch["data"], dtype=np.uint8)
                if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(batch[cls.label_key]):
                    raise DataConfigError(f"{d / n}: data of shape {x.shape}, expected (n, 3072).")
                xs.append(x)
                ys.append(np.asarray(batch[cls.label_key], dtype=np.int64))
            out[f"{split}_x"] = torch.from_numpy(np.concatenate(xs).reshape(-1, 3, 32, 32))
            y = torch.from_numpy(np.concatenate(ys))
            out[f"{split}_y"] = check_labels(y, cls.num_classes, d)
        return out

    @classmethod
    def load(cls, opts: DataOptions) -> DatasetSplits:
        meta = cls.meta(opts)
        gray, noise, perm, res = cls._options(opts)
        data = cls.read(opts.root, opts.download)
        if gray:
            data = {k: to_grayscale(v) if k.endswith("_x") else v for k, v in data.items()}
        sequence = opts.data_type == "sequence"
        state: dict[str, Any] = {}
        permutation = None
        if perm:
            length = res + NOISE_PAD_STEPS if noise else res * res
            permutation = state["permutation"] = fixed_permutation(length, opts.split_seed)
        transform = ImageBatchTransform(
            meta.extra["mean"],
            meta.extra["std"],
            augment="crop_flip" if opts.augment else None,
            sequence=sequence and not noise,
            crop_padding=crop_padding(res),
            size=res if res != 32 else None,
            permutation=permutation,
            noise_pad_length=res + NOISE_PAD_STEPS if noise else None,
            noise_seed=opts.split_seed,
        )
        n_val = val_count(len(data["train_x"]), cls.official_train, cls.official_val)
        return make_splits(data, n_val, opts, meta, transform, state)


@DATASETS.register("CIFAR10", "cifar10", "CIFAR-10")
class CIFAR10(_CIFAR):
    name = "CIFAR10"
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    md5 = "c58f30108f718f92721af3b95e74349a"
    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = "labels"
    num_classes = 10
    mean, std = CIFAR10_MEAN, CIFAR10_STD


@DATASETS.register("CIFAR100", "cifar100", "CIFAR-100")
class CIFAR100(_CIFAR):
    name = "CIFAR100"
    url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    md5 = "eb9058c3a382ffc7106e4002c42a8d85"
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
    num_classes = 100
    mean, std = CIFAR100_MEAN, CIFAR100_STD


# --------------------------------------------------------------------------------------------
# STL-10


@DATASETS.register("STL10", "stl10", "STL-10")
class STL10:
    """STL-10 (Coates et al., 2011), the labelled 96x96 part of the binary release.

    The standard 10-fold protocol is not used: as in the papers, the 5,000 training images form
    one training set (4,500 train / 500 validation held out with ``split_seed``) and the 8,000
    test images the test split. ``params.resolution`` resizes (the published CCNN code used 256).
    """

    url: ClassVar[str] = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
    md5: ClassVar[str] = "91f7769df0f17e558f3565bffb0c7dfb"
    mirrors: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[tuple[str, ...]] = ("resolution",)
    folder = "stl10_binary"
    files = ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")
    official_train, official_val = 5_000, 500
    side = 96

    @classmethod
    def meta(cls, opts: DataOptions) -> DatasetMeta:
        check_data_type(opts, ("default",))
        reject_params(opts, ("grayscale", "noise_padded", "permuted"))
        res = resolution_param(opts, cls.side)
        extra = {"resolution": res, "native_resolution": cls.side}
        return DatasetMeta(3, 10, 2, (3, res, res), "default", extra)

    @classmethod
    def read(cls, root: Path, download: bool) -> dict[str, torch.Tensor]:
        d = root / cls.folder
        if not all((d / f).is_file() for f in cls.files):
            archive = RemoteFile(cls.url, "stl10_binary.tar.gz", md5=cls.md5, mirrors=cls.mirrors)
            (path,) = fetch(root, [archive], download=download, dataset="STL10")
            safe_extract(path, root)
        out = {}
        n_pix = 3 * cls.side * cls.side
        for split in ("train", "test"):
            raw = np.fromfile(d / f"{split}_X.bin", dtype=np.uint8)
            y = np.fromfile(d / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
            if raw.size % n_pix or raw.size // n_pix != len(y):
                raise DataConfigError(
                    f"{d}/{split}_X.bin holds {raw.size} bytes, {split}_y.bin {len(y)} labels; "
                    f"expected {len(y)} x {n_pix} bytes (truncated download?)."
                )
            # each image is stored column-major: (c, w, h) in C order
            x = raw.reshape(-1, 3, cls.side, cls.side).transpose(0, 1, 3, 2)
            out[f"{split}_x"] = torch.from_numpy(np.ascontiguousarray(x))
            out[f"{split}_y"] = check_labels(torch.from_numpy(y), 10, d / f"{split}_y.bin")
        return out

    @classmethod
    def load(cls, opts: DataOptions) -> DatasetSplits:
        meta = cls.meta(opts)
        res = meta.extra["resolution"]
        data = cls.read(opts.root, opts.download)
        n_val = val_count(len(data["train_x"]), cls.official_train, cls.official_val)
        train_idx, _ = split_train_val(len(data["train_x"]), n_val, opts.split_seed)
        mean, std = channel_stats(data["train_x"][train_idx])
        meta.extra.update(mean=mean, std=std)
        transform = ImageBatchTransform(
            mean,
            std,
            augment="crop_flip" if opts.augment else None,
            crop_padding=crop_padding(res),
            size=res if res != cls.side else None,
        )
        return make_splits(data, n_val, opts, meta, transform)
