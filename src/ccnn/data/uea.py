"""UEA/UCR time-series classification archives (Bagnall et al. 2018, arXiv:1811.00075) via aeon.

Two families:

* ``UEA`` with ``params.uea_name`` (``BasicMotions``, ``JapaneseVowels``, ``ArrowHead``,
  ``GunPoint``, ``ItalyPowerDemand``, ``OSULeaf``, ...). Files are looked up in this order:
  ``<root>/UEA/<name>/**/<name>_{TRAIN,TEST}.ts``; the copies bundled inside aeon
  (``aeon/datasets/data/<name>/``, offline — aeon 1.6 ships ACSF1, ArrowHead, BasicMotions,
  GunPoint, ItalyPowerDemand, JapaneseVowels, OSULeaf, PickupGestureWiimoteZ, UnitTest); else,
  when downloading is allowed, the two ``.ts`` files are fetched into ``<root>/UEA/<name>/`` from
  the set's Zenodo record of the tsml community (aeon 1.6's source; record ids from aeon's
  ``tsc_zenodo``), falling back to the zip ``https://timeseriesclassification.com/aeon-toolkit/
  <name>.zip`` (older aeon's source), extracted into ``<root>/UEA/<name>/``. We read the original
  files, never aeon's ``_eq`` (truncated equal-length) variants that ``load_classification``
  prefers.
* ``CharTrajectories`` = UEA CharacterTrajectories (Williams et al.), used by CKConv/FlexConv:
  3 channels (pen x, y, tip force), 20 characters, 2,858 series of length ≤ 182. Read from
  ``<root>/UEA/CharacterTrajectories/`` (fetched as above when allowed).

The ``.ts`` files are parsed with aeon's ``load_from_ts_file`` (``pip install aeon``).

Labels: the distinct class strings of TRAIN ∪ TEST in sorted order (numerically when every label
is a number, else lexicographically; aeon lower-cases them) → ``0..C-1``.

Splits: ``params.uea_split="official"`` (default): the official TRAIN is split stratified
(seeded by ``opts.split_seed``) into train/val with ``params.val_fraction`` (0.2) held out; TEST
is the test split. ``"pooled"``: TRAIN ∪ TEST split stratified 70/15/15 — the protocol of the
published CKConv/FlexConv code (after Kidger et al. 2020, arXiv:2005.08926), for comparison.

Values: every channel is standardised with the mean/std of the observed values of the TRAINING
split (``params.normalize="dataset"``, default), or each series on its own (``"series"``, the UCR
z-normalisation; ``"series_scale"`` also keeps each series' level and scale as two constant
channels per channel — see :func:`normalize`). Variable lengths, missing values ``?`` and
dropped steps are handled by ``params.pad_mode``:

* ``"exclude"`` (default): series are padded at the end to the maximum length and batches are
  ``(x, y, mask)`` with ``mask (l,)`` 1 at observed steps; the network excludes unobserved steps
  exactly (:mod:`ccnn.nn.masking`), so padding never changes a prediction. Equal-length sets
  without missing data give plain ``(x, y)``.
* ``"timestamps"``: each series keeps only its observed steps, moved to the front, with their
  original step indices as times: ``(x, y, mask, times)``; the network convolves at the true time
  differences. This is how irregularly sampled series are given.
* ``"mask"`` (the published CKConv/FlexConv encoding): zeros at unobserved steps (= the channel
  mean after normalisation) and an observation-mask channel appended, giving ``(c + 1, l_max)``;
  every step flows through the network. Equal-length sets without missing data get no mask.
* ``"ffill"``: missing steps repeat the last observed value (padding continues the final value,
  as in the published code), no mask channel: ``(c, l_max)``.

``params.drop_rate=r > 0`` drops ``round(r * length)`` seeded random time steps of each series
(``r < 1`` a fraction, ``1 <= r < 100`` a percentage, as in the published irregular-sampling
experiments) — they count as missing (with ``pad_mode=mask`` the mask channel is always added).

``params.val_fraction=0`` keeps the whole official TRAIN for training (no validation split; the
UEA preset trains a fixed number of steps and tests the final model).

Unset params (missing, ``None``, ``""`` or ``-1``) take the defaults above.

Data are small, so inputs are stored normalised as ``float32`` and there is no batch transform.
``meta`` reads nothing for the sets in :data:`KNOWN_SETS`; for other sets it reads the files.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ccnn.data.base import (
    DATASETS,
    DataConfigError,
    DataOptions,
    DatasetMeta,
    DatasetSplits,
    check_data_type,
    drop_fraction,
    drop_mask,
    example_seed,
    param,
    stratified_split,
)
from ccnn.data.download import (
    DatasetNotFoundError,
    RemoteFile,
    fetch,
    fetch_extracted,
    not_found_message,
)

ZENODO_URL = "https://zenodo.org/records/{id}/files/{file}?download=1"
ZENODO_IDS = {"CharacterTrajectories": 18723007}  # as in aeon 1.6's tsc_zenodo
ZIP_URL = "https://timeseriesclassification.com/aeon-toolkit/{name}.zip"
CHAR_TRAJECTORIES = "CharacterTrajectories"
PAD_MODES = ("exclude", "timestamps", "mask", "ffill")
SPLITS = ("official", "pooled")


@dataclass(frozen=True)
class SetInfo:
    channels: int
    length: int  # maximum length over TRAIN and TEST
    classes: int
    variable: bool  # unequal lengths or missing values


KNOWN_SETS: dict[str, SetInfo] = {
    # bundled with aeon 1.6 (values read from those files)
    "ACSF1": SetInfo(1, 1460, 10, False),
    "ArrowHead": SetInfo(1, 251, 3, False),
    "BasicMotions": SetInfo(6, 100, 4, False),
    "GunPoint": SetInfo(1, 150, 2, False),
    "ItalyPowerDemand": SetInfo(1, 24, 2, False),
    "JapaneseVowels": SetInfo(12, 29, 9, True),
    "OSULeaf": SetInfo(1, 427, 6, False),
    "PickupGestureWiimoteZ": SetInfo(1, 361, 10, True),
    "UnitTest": SetInfo(1, 24, 2, False),
    # downloaded
    CHAR_TRAJECTORIES: SetInfo(3, 182, 20, True),
}


def bundled_dir() -> Path | None:
    """aeon's directory of bundled datasets (``aeon/datasets/data``), if aeon is installed."""
    try:
        import aeon
    except ImportError:
        return None
    return Path(os.path.dirname(aeon.__file__)) / "datasets" / "data"


def _find_pair(directory: Path, name: str) -> tuple[Path, Path] | None:
    if not directory.is_dir():
        return None
    found = []
    for split in ("TRAIN", "TEST"):
        hits = sorted(directory.rglob(f"{name}_{split}.ts"))
        if not hits:
            return None
        found.append(hits[0])
    return found[0], found[1]


def zenodo_id(name: str) -> int | None:
    """Zenodo record of a set in the tsml community (aeon's table; CharacterTrajectories known)."""
    try:
        from aeon.datasets.tsc_datasets import tsc_zenodo
    except ImportError:
        tsc_zenodo = {}
    return tsc_zenodo.get(name, ZENODO_IDS.get(name))


def _download(opts: DataOptions, name: str, user_dir: Path) -> None:
    """Fetch ``<name>_{TRAIN,TEST}.ts`` from Zenodo (aeon's source), else the zip mirror."""
    zip_file = RemoteFile(ZIP_URL.format(name=name), f"{name}.zip")
    zid = zenodo_id(name)
    if zid is not None:
        ts_files = [
            RemoteFile(ZENODO_URL.format(id=zid, file=f"{name}_{s}.ts"), f"{name}_{s}.ts")
            for s in ("TRAIN", "TEST")
        ]
        if not opts.download:
            reason = "files missing and downloading is disabled (dataset.download=false)."
            hint = f"Or extract {zip_file.url} into {user_dir}."
            raise DatasetNotFoundError(not_found_message(name, user_dir, ts_files, reason, hint))
        try:
            fetch(user_dir, ts_files, download=True, dataset=name)
            return
        except DatasetNotFoundError:
            pass  # unreachable: try the zip mirror
    fetch_extracted(
        dataset=name,
        present=lambda: _find_pair(user_dir, name) is not None,
        archive_dir=user_dir.parent,
        remote=zip_file,
        extract_to=user_dir,
        download=opts.download,
        expected=f"{user_dir}/{name}_{{TRAIN,TEST}}.ts",
    )


def locate(opts: DataOptions, name: str, allow_bundled: bool = True) -> tuple[Path, Path]:
    """Paths of ``<name>_TRAIN.ts`` and ``<name>_TEST.ts`` (user dir, bundled, or fetched)."""
    user_dir = Path(opts.root) / "UEA" / name
    pair = _find_pair(user_dir, name)
    if pair:
        return pair
    bundled = bundled_dir() if allow_bundled else None
    if bundled is not None and (pair := _find_pair(bundled / name, name)):
        return pair
    _download(opts, name, user_dir)
    pair = _find_pair(user_dir, name)
    if pair is None:
        raise DatasetNotFoundError(f"Dataset {name!r}: no {name}_{{TRAIN,TEST}}.ts in {user_dir}.")
    return pair


def read_ts(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Series ``[(c, l_i) float64]`` and label strings of a ``.ts`` file (aeon's reader)."""
    try:
        from aeon.datasets import load_from_ts_file
    except ImportError:
        raise DataConfigError(
            "Reading UEA/UCR .ts files needs aeon: pip install 'ccnn[timeseries]' (or aeon)."
        ) from None
    try:
        X, y = load_from_ts_file(str(path))
    except (OSError, ValueError, IndexError) as e:
        raise DataConfigError(f"Could not read {path} as a .ts file: {e}") from None
    series = [np.asarray(x, dtype=np.float64) for x in X]
    return series, np.asarray(y).astype(str)


def sorted_classes(labels: np.ndarray) -> list[str]:
    """Distinct labels, numerically sorted if all are numbers, else lexicographically."""
    uniq = sorted(set(labels.tolist()))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq


def _pad(series: list[np.ndarray], length: int) -> np.ndarray:
    """``(n, c, length)`` with NaN after each series' end."""
    c = series[0].shape[0]
    out = np.full((len(series), c, length), np.nan, dtype=np.float64)
    for i, s in enumerate(series):
        if s.shape[0] != c:
            raise DataConfigError(f"series {i} has {s.shape[0]} channels, expected {c}.")
        out[i, :, : s.shape[1]] = s
    return out


def forward_fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replace invalid entries along the last axis by the last valid one (0 before any)."""
    filled = np.where(valid, values, 0.0)
    idx = np.where(valid, np.arange(values.shape[-1]), 0)
    idx = np.maximum.accumulate(idx, axis=-1)
    return np.take_along_axis(filled, idx, axis=-1)


NORMALIZE = ("dataset", "series", "series_scale")


def _options(opts: DataOptions) -> tuple[str, str, float, float]:
    pad_mode = param(opts, "pad_mode", "exclude")
    norm = param(opts, "normalize", "dataset")
    if norm not in NORMALIZE:
        raise DataConfigError(
            f"dataset.params.normalize={norm!r}: use 'dataset' (per channel, training "
            "statistics), 'series' (each series z-normalised) or 'series_scale' (z-normalised "
            "plus each series' level and scale as channels)."
        )
    split = param(opts, "uea_split", "official")
    frac = float(param(opts, "val_fraction", 0.2))
    if pad_mode not in PAD_MODES:
        raise DataConfigError(
            f"dataset.params.pad_mode={pad_mode!r}: use 'exclude' (unobserved steps are excluded "
            "exactly), 'timestamps' (observed steps with their times), 'mask' (zero fill + mask "
            "channel, as published) or 'ffill' (repeat the last observed value)."
        )
    if split not in SPLITS:
        raise DataConfigError(
            f"dataset.params.uea_split={split!r}: use 'official' (TRAIN → train/val, TEST → "
            "test) or 'pooled' (TRAIN ∪ TEST → 70/15/15)."
        )
    if not 0.0 <= frac < 1.0:
        raise DataConfigError(
            f"dataset.params.val_fraction={frac} must be in [0, 1) (0: no validation split)."
        )
    return pad_mode, split, frac, drop_fraction(opts)


class _UEABase:
    """Shared meta/load for a named UEA/UCR set."""

    params: ClassVar[tuple[str, ...]] = (
        "pad_mode",
        "normalize",
        "uea_split",
        "val_fraction",
        "drop_rate",
    )
    allow_bundled = True

    @classmethod
    def set_name(cls, opts: DataOptions) -> str:
        raise NotImplementedError

    @classmethod
    def info(cls, opts: DataOptions, name: str) -> SetInfo:
        if name in KNOWN_SETS:
            return KNOWN_SETS[name]
        train_path, test_path = locate(opts, name, cls.allow_bundled)  # unknown: read the files
        series, labels = [], []
        for p in (train_path, test_path):
            s, y = read_ts(p)
            series += s
            labels.append(y)
        lengths = {s.shape[-1] for s in series}
        missing = any(np.isnan(s).any() for s in series)
        return SetInfo(
            series[0].shape[0],
            max(lengths),
            len(sorted_classes(np.concatenate(labels))),
            len(lengths) > 1 or missing,
        )

    @classmethod
    def meta(cls, opts: DataOptions) -> DatasetMeta:
        check_data_type(opts, ("default", "sequence"))
        pad_mode, split, _, rate = _options(opts)
        name = cls.set_name(opts)
        info = cls.info(opts, name)
        unobserved = rate > 0 or info.variable
        mask = pad_mode == "mask" and unobserved
        norm = param(opts, "normalize", "dataset")
        c = info.channels * (3 if norm == "series_scale" else 1) + int(mask)
        extra = {
            "uea_name": name,
            "mask_channel": mask,
            "observation_mask": pad_mode == "timestamps" or (pad_mode == "exclude" and unobserved),
            "timestamps": pad_mode == "timestamps",
            "pad_mode": pad_mode,
            "normalize": norm,
            "uea_split": split,
            "drop_rate": rate,
        }
        return DatasetMeta(c, info.classes, 1, (c, info.length), opts.data_type, extra)

    @classmethod
    def load(cls, opts: DataOptions) -> DatasetSplits:
        meta = cls.meta(opts)
        pad_mode, split, frac, rate = _options(opts)
        name = meta.extra["uea_name"]
        train_path, test_path = locate(opts, name, cls.allow_bundled)
        s_tr, y_tr = read_ts(train_path)
        s_te, y_te = read_ts(test_path)
        series, n_tr = s_tr + s_te, len(s_tr)
        classes = sorted_classes(np.concatenate([y_tr, y_te]))
        to_id = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([to_id[v] for v in np.concatenate([y_tr, y_te])], dtype=torch.long)
        length = max(s.shape[-1] for s in series)
        values = _pad(series, length)  # (n, c, l), NaN = missing
        if rate > 0:
            for i, s in enumerate(series):
                keep = drop_mask(s.shape[-1], rate, example_seed(opts.split_seed, i)).numpy()
                values[i, :, : s.shape[-1]][:, ~keep] = np.nan

        # splits (indices into the concatenation TRAIN ‖ TEST)
        if split == "official":
            if frac > 0:
                tr, va = stratified_split(y[:n_tr], (1.0 - frac, frac), seed=opts.split_seed)
            else:
                tr, va = torch.arange(n_tr), torch.arange(0)
            te = torch.arange(n_tr, len(series))
        else:
            tr, va, te = stratified_split(y, (0.7, 0.15, 0.15), seed=opts.split_seed)

        values = normalize(values, tr.numpy(), meta.extra["normalize"])
        valid = ~np.isnan(values)  # (n, c', l)
        values = (
            forward_fill(values, valid) if pad_mode == "ffill" else np.where(valid, values, 0.0)
        )
        x = torch.from_numpy(values).float()
        observed = torch.from_numpy(valid.any(axis=1)).float()  # (n, l)
        extras: list[torch.Tensor] = []
        if meta.extra["mask_channel"]:
            x = torch.cat([x, observed[:, None]], dim=1)  # (n, c + 1, l)
        elif meta.extra["timestamps"]:
            x, observed, times = compact_observed(x, observed)
            extras = [observed, times]
        elif meta.extra["observation_mask"]:
            extras = [observed]
        if (
            tuple(x.shape[1:2]) != meta.input_shape[:1]
            or len(classes) != meta.num_classes
            or (not meta.extra["timestamps"] and x.shape[-1] != meta.input_shape[-1])
        ):
            raise DataConfigError(
                f"{name}: the files give inputs {tuple(x.shape[1:])} and {len(classes)} classes, "
                f"but {meta.input_shape} and {meta.num_classes} were expected; the files are "
                "not the official release."
            )
        sets = [TensorDataset(x[i], y[i], *(e[i] for e in extras)) for i in (tr, va, te)]
        meta.extra["classes"] = classes
        return DatasetSplits(*sets, meta=meta, state={})


def normalize(values: np.ndarray, train: np.ndarray, mode: str) -> np.ndarray:
    """Standardise ``(n, c, l)`` series (NaN = unobserved) as ``params.normalize`` says.

    * ``dataset``: each channel with the mean/std of the observed training values;
    * ``series``: each series and channel over its own observed steps (z-normalisation, the UCR
      convention), so series of very different scales are comparable;
    * ``series_scale``: ``series`` plus, per channel, two constant channels with the series'
      level and scale (``asinh(mean)`` and ``log(std)``, centred with training statistics and
      divided by their training spread where it exceeds 1), so the information
      z-normalisation removes is still there: ``(n, 3c, l)``.
    """
    if mode == "dataset":
        mean = np.nanmean(values[train], axis=(0, 2))
        std = np.nanstd(values[train], axis=(0, 2), ddof=1)
        std = np.where(std > 0, std, 1.0)
        return (values - mean[None, :, None]) / std[None, :, None]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series stay NaN
        level = np.nanmean(values, axis=2, keepdims=True)  # (n, c, 1)
        scale = np.nanstd(values, axis=2, keepdims=True)
    z = (values - level) / np.where(scale > 0, scale, 1.0)
    if mode == "series":
        return z
    stats = np.concatenate([np.arcsinh(level), np.log(scale + 1e-3)], axis=1)  # (n, 2c, 1)
    stats = np.nan_to_num(stats)
    # centred, and divided by their spread only where it exceeds 1: sets whose series are
    # already z-normalised have (almost) constant levels and scales, whose noise must not be
    # blown up into large inputs
    stats = (stats - stats[train].mean(0)) / np.maximum(stats[train].std(0), 1.0)
    constant = np.where(np.isnan(values).all(1, keepdims=True), np.nan, 1.0)  # (n, 1, l)
    return np.concatenate([z, stats * constant], axis=1)


def compact_observed(
    x: torch.Tensor, observed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each series' observed steps to the front, keeping their step indices as times.

    Shapes: ``(n, c, l), (n, l) -> (n, c, m), (n, m) mask, (n, m) times`` with ``m`` the largest
    number of observed steps.
    """
    keep = observed > 0
    m = max(1, int(keep.sum(-1).max()))
    order = torch.argsort((~keep).to(torch.int8), dim=-1, stable=True)[:, :m]  # observed first
    values = x.gather(-1, order[:, None].expand(-1, x.shape[1], -1))
    mask = keep.gather(-1, order).float()
    times = order.float() * mask
    return values * mask[:, None], mask, times


@DATASETS.register("UEA", "UCR")
class UEA(_UEABase):
    """Any UEA/UCR classification set named by ``params.uea_name`` (see module docstring)."""

    params: ClassVar[tuple[str, ...]] = ("uea_name", *_UEABase.params)

    @classmethod
    def set_name(cls, opts: DataOptions) -> str:
        name = opts.param("uea_name")
        if not name or not isinstance(name, str):
            raise DataConfigError(
                "dataset.name=UEA needs dataset.params.uea_name, e.g. BasicMotions; sets bundled "
                f"with aeon (offline): {sorted(k for k in KNOWN_SETS if k != CHAR_TRAJECTORIES)}."
            )
        if "/" in name or "\\" in name or name.startswith("."):
            raise DataConfigError(f"dataset.params.uea_name={name!r} is not a dataset name.")
        return name


@DATASETS.register("CharTrajectories", "CharacterTrajectories")
class CharTrajectories(_UEABase):
    """UEA CharacterTrajectories: 3 channels, length ≤ 182, 20 classes."""

    allow_bundled = False

    @classmethod
    def set_name(cls, opts: DataOptions) -> str:
        return CHAR_TRAJECTORIES


__all__ = ["UEA", "CharTrajectories", "KNOWN_SETS", "DatasetNotFoundError", "forward_fill"]
