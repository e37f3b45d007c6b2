"""The contract every dataset family implements, and the helpers they share.

A dataset family (MNIST, CIFAR10, Digits, ...) is registered in :data:`DATASETS` and
provides two things:

* ``meta(opts) -> DatasetMeta``: shapes and class counts, computed WITHOUT touching disk, so a
  model can be built (and ``dataset.fake=true`` can run) with no files present;
* ``load(opts) -> DatasetSplits``: the real train/val/test datasets.

Examples are stored compactly (often ``uint8``) and turned into network inputs by a
``batch_transform`` that runs on whole batches on the training device (normalisation,
flattening images into sequences, augmentation), which is much faster than per-sample Python.

Shapes: ``x`` is ``(b, c, *spatial)`` as the network sees it — ``(b, c, l)`` for sequences,
``(b, c, h, w)`` for images, ``(b, 6, n)`` for point clouds (channels 0-2 are xyz).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ccnn.errors import OptionError
from ccnn.registry import Registry

if TYPE_CHECKING:
    from ccnn.data.transforms import ImageBatchTransform

DATA_TYPES = ("default", "sequence", "pointcloud")
DATA_DIR_ENV = "CCNN_DATA_DIR"


@dataclass
class DataOptions:
    """Everything a dataset family needs to know (mirrors ``dataset.*`` of the CCNN config)."""

    name: str
    data_type: str = "default"
    data_dir: str | None = None
    augment: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    fake: bool = False
    split_seed: int = 42
    download: bool = True

    def param(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)

    @property
    def root(self) -> Path:
        """Data directory: ``data_dir``, else ``$CCNN_DATA_DIR``, else ``./data``."""
        return Path(self.data_dir or os.environ.get(DATA_DIR_ENV) or "data").expanduser()


@dataclass
class DatasetMeta:
    """Facts about a dataset that the model needs.

    Attributes:
        in_channels: channels of one network input.
        num_classes: number of classes (2 for binary tasks; the model then uses 1 logit).
        data_dim: spatial dimensionality of inputs (1 sequences, 2 images, 3 point clouds).
        input_shape: shape of one input ``(c, *spatial)``; for variable-size data the maximum.
        data_type: ``default``, ``sequence`` or ``pointcloud``.
        extra: anything else (e.g. class names, vocabulary size).
    """

    in_channels: int
    num_classes: int
    data_dim: int
    input_shape: tuple[int, ...]
    data_type: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)


BatchTransform = Callable[[torch.Tensor, bool], torch.Tensor]
"""``transform(x, training) -> x``: applied on the training device to whole batches."""


@dataclass
class DatasetSplits:
    train: Dataset
    val: Dataset
    test: Dataset
    meta: DatasetMeta
    batch_transform: BatchTransform | None = None
    state: dict[str, Any] = field(default_factory=dict)
    """Datamodule state to save with checkpoints (e.g. the pMNIST permutation)."""


class DatasetFamily(Protocol):
    params: tuple[str, ...]
    """The ``DataOptions.params`` keys this family reads (a nested dict counts by its name);
    the apps reject any other dataset parameter set to a non-default value."""

    def meta(self, opts: DataOptions) -> DatasetMeta: ...

    def load(self, opts: DataOptions) -> DatasetSplits: ...


DATASETS: Registry[Any] = Registry("dataset")


class DataConfigError(OptionError):
    """Invalid dataset options or missing files; the message says how to fix it."""


def split_train_val(n: int, n_val: int, seed: int = 42) -> tuple[torch.Tensor, torch.Tensor]:
    """Random disjoint (train, val) index tensors, reproducible for a given seed."""
    if not 0 < n_val < n:
        raise DataConfigError(f"validation size {n_val} must be in (0, {n})")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def stratified_split(
    labels: torch.Tensor, fractions: tuple[float, ...], seed: int = 42
) -> list[torch.Tensor]:
    """Split indices per class into len(fractions) disjoint parts with the given fractions."""
    gen = torch.Generator().manual_seed(seed)
    parts: list[list[torch.Tensor]] = [[] for _ in fractions]
    for cls in labels.unique(sorted=True):
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        bounds = [0]
        acc = 0.0
        for f in fractions:
            acc += f
            bounds.append(round(acc * len(idx)))
        bounds[-1] = len(idx)
        for i in range(len(fractions)):
            parts[i].append(idx[bounds[i] : bounds[i + 1]])
    return [torch.cat(p).sort().values for p in parts]


def tensor_splits(
    x: torch.Tensor, y: torch.Tensor, train_idx, val_idx, x_test, y_test
) -> tuple[Dataset, Dataset, Dataset]:
    """TensorDatasets for train/val (indexed out of ``x, y``) and test."""
    return (
        TensorDataset(x[train_idx], y[train_idx]),
        TensorDataset(x[val_idx], y[val_idx]),
        TensorDataset(x_test, y_test),
    )


class FakeDataset(Dataset):
    """Random inputs with a dataset's exact input shape and class count (no files needed)."""

    def __init__(self, meta: DatasetMeta, length: int, seed: int = 0):
        self.meta, self.length, self.seed = meta, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        vocab = self.meta.extra.get("vocab_size") if self.meta.extra.get("token_ids") else None
        if vocab:  # token datasets: valid ids, stored as floats like the real loaders
            x = torch.randint(vocab, self.meta.input_shape, generator=g).float()
        else:
            x = torch.randn(self.meta.input_shape, generator=g)
        y = torch.randint(self.meta.num_classes, (), generator=g)
        return x, y


def fake_splits(meta: DatasetMeta, sizes: tuple[int, int, int] = (256, 64, 64)) -> DatasetSplits:
    return DatasetSplits(
        train=FakeDataset(meta, sizes[0], seed=1),
        val=FakeDataset(meta, sizes[1], seed=2),
        test=FakeDataset(meta, sizes[2], seed=3),
        meta=meta,
    )


def check_data_type(opts: DataOptions, supported: tuple[str, ...]) -> None:
    if opts.data_type not in supported:
        raise DataConfigError(
            f"dataset.data_type={opts.data_type!r} is not supported for dataset.name="
            f"{opts.name!r}; use one of {list(supported)}."
        )


def get_family(name: str) -> DatasetFamily:
    """The registered family for ``name`` (classes are instantiated without arguments)."""
    family = DATASETS.get(name)
    return family() if isinstance(family, type) else family


def get_meta(opts: DataOptions) -> DatasetMeta:
    return get_family(opts.name).meta(opts)


def load_splits(opts: DataOptions) -> DatasetSplits:
    """Real splits, or fake ones with the exact shapes when ``opts.fake``."""
    family = get_family(opts.name)
    if opts.fake:
        return fake_splits(family.meta(opts))
    return family.load(opts)


# ---------------------------------------------------------------------------------------------
# helpers shared by the dataset families. One convention for unset parameters: a missing key,
# None, "" and -1 all mean "unset" (:func:`param`).


def param(opts: DataOptions, key: str, default):
    """``opts.params[key]``, with unset values (missing, ``None``, ``""``, ``-1``) → ``default``."""
    value = opts.param(key, default)
    if (
        value is None
        or (isinstance(value, str) and value == "")
        or (not isinstance(value, bool) and isinstance(value, int | float) and value == -1)
    ):
        return default
    return value


def drop_fraction(opts: DataOptions) -> float:
    """``params.drop_rate`` as a fraction in [0, 1): ``r < 1`` is a fraction, ``r >= 1`` percent."""
    rate = param(opts, "drop_rate", 0.0) or 0.0
    try:
        rate = float(rate)
    except (TypeError, ValueError):
        raise DataConfigError(
            f"dataset.params.drop_rate={rate!r} must be a number: a fraction in [0, 1) or a "
            "percentage in [1, 100)."
        ) from None
    if not 0.0 <= rate < 100.0:
        raise DataConfigError(
            f"dataset.params.drop_rate={rate} is out of range; use a fraction in [0, 1) (e.g. 0.3)"
            " or a percentage in [1, 100) (e.g. 30)."
        )
    return rate / 100.0 if rate >= 1.0 else rate


def drop_mask(length: int, rate: float, seed: int) -> torch.Tensor:
    """Boolean mask ``(length,)``, ``False`` at ``round(rate * length)`` seeded random steps."""
    keep = torch.ones(length, dtype=torch.bool)
    n_drop = round(rate * length)
    if n_drop:
        g = torch.Generator().manual_seed(seed)
        keep[torch.randperm(length, generator=g)[:n_drop]] = False
    return keep


def example_seed(base: int, index: int) -> int:
    """Seed for example ``index`` (fixed per example, independent of the split it lands in)."""
    return (base * 1_000_003 + index) % (2**63 - 1)


def bool_param(opts: DataOptions, key: str) -> bool:
    """``dataset.params.<key>`` as a bool; anything but a bool (or 0/1) is a config error."""
    value = param(opts, key, False)
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise DataConfigError(
        f"dataset.params.{key}={value!r} must be true or false (dataset.name={opts.name!r})."
    )


def resolution_param(opts: DataOptions, native: int) -> int:
    """``dataset.params.resolution`` (image side in pixels); ``native`` when unset/None."""
    value = param(opts, "resolution", None)
    if value is None:
        return native
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise DataConfigError(
            f"dataset.params.resolution={value!r} must be a positive integer (image side in "
            f"pixels; {native} is the native size of {opts.name})."
        )
    return int(value)


def reject_params(opts: DataOptions, keys: tuple[str, ...], why: str = "") -> None:
    """Raise for boolean ``params`` that are set but mean nothing for this configuration."""
    for key in keys:
        if bool_param(opts, key):
            raise DataConfigError(
                f"dataset.params.{key}=true is not supported for dataset.name={opts.name!r} with "
                f"dataset.data_type={opts.data_type!r}{why}; set it to false."
            )


class IndexedDataset(Dataset):
    """``(x[i], y[i])`` for ``i`` in ``indices`` without copying ``x`` (all rows if ``None``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, indices: torch.Tensor | None = None):
        if len(x) != len(y):
            raise OptionError(f"{len(x)} inputs but {len(y)} labels")
        self.x, self.y, self.indices = x, y, indices

    def __len__(self) -> int:
        return len(self.x) if self.indices is None else len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = i if self.indices is None else int(self.indices[i])
        return self.x[j], self.y[j]


def make_splits(
    data: dict[str, torch.Tensor],
    n_val: int,
    opts: DataOptions,
    meta: DatasetMeta,
    transform: ImageBatchTransform,
    state: dict[str, Any] | None = None,
) -> DatasetSplits:
    """Train/val held out of ``data['train_x']`` with ``opts.split_seed``; test = official test."""
    x, y = data["train_x"], data["train_y"]
    train_idx, val_idx = split_train_val(len(x), n_val, opts.split_seed)
    return DatasetSplits(
        train=IndexedDataset(x, y, train_idx),
        val=IndexedDataset(x, y, val_idx),
        test=IndexedDataset(data["test_x"], data["test_y"]),
        meta=meta,
        batch_transform=transform,
        state=state or {},
    )


def check_labels(y: torch.Tensor, num_classes: int, source: Path | str) -> torch.Tensor:
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise DataConfigError(
            f"{source}: labels outside 0..{num_classes - 1} (found {int(y.min())}.."
            f"{int(y.max())}); the file is not in the expected format."
        )
    return y


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of lists, strings and numpy arrays) and nothing else."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset pickle")


def read_cifar_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR python batch as a dict with ``str`` keys (no arbitrary code is run)."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DataConfigError(f"{path}: not a CIFAR python batch ({e}).") from None
    if not isinstance(obj, dict):
        raise DataConfigError(f"{path}: not a CIFAR python batch (no dict inside).")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
