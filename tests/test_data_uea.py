"""UEA/UCR loaders on .ts fixtures (variable length, masks, splits) and on real BasicMotions."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ccnn.data import uea
from ccnn.data.base import DataConfigError, DataOptions, get_meta, load_splits
from ccnn.data.download import DatasetNotFoundError
from sequence_fixtures import serve_directory, toy_series, write_ts, write_uea


def opts(root: Path, name: str = "Toy", family: str = "UEA", **params) -> DataOptions:
    if family == "UEA":
        params = {"uea_name": name, **params}
    return DataOptions(family, data_dir=str(root), params=params, download=False)


def all_rows(splits) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(s.tensors[:2] for s in (splits.train, splits.val, splits.test)))
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------------------------------------
# meta


@pytest.mark.parametrize(
    "family, params, shape, classes",
    [
        ("CharTrajectories", {}, (3, 182), 20),
        ("CharTrajectories", {"pad_mode": "mask"}, (4, 182), 20),
        ("CharTrajectories", {"pad_mode": "ffill"}, (3, 182), 20),
        ("CharTrajectories", {"pad_mode": "ffill", "drop_rate": 0.3}, (3, 182), 20),
        ("CharTrajectories", {"pad_mode": "mask", "drop_rate": 0.3}, (4, 182), 20),
        ("UEA", {"uea_name": "BasicMotions"}, (6, 100), 4),
        ("UEA", {"uea_name": "BasicMotions", "drop_rate": 50}, (6, 100), 4),
        ("UEA", {"uea_name": "BasicMotions", "drop_rate": 50, "pad_mode": "mask"}, (7, 100), 4),
        ("UEA", {"uea_name": "JapaneseVowels"}, (12, 29), 9),
        ("UEA", {"uea_name": "JapaneseVowels", "pad_mode": "mask"}, (13, 29), 9),
    ],
)
def test_meta_without_files(tmp_path, family, params, shape, classes):
    meta = get_meta(DataOptions(family, data_dir=str(tmp_path / "none"), params=params))
    assert meta.input_shape == shape and meta.num_classes == classes and meta.data_dim == 1
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    "params, key",
    [
        ({}, "uea_name"),
        ({"uea_name": "../etc"}, "uea_name"),
        ({"uea_name": "BasicMotions", "pad_mode": "edge"}, "pad_mode"),
        ({"uea_name": "BasicMotions", "uea_split": "random"}, "uea_split"),
        ({"uea_name": "BasicMotions", "normalize": "minmax"}, "normalize"),
        ({"uea_name": "BasicMotions", "val_fraction": 1}, "val_fraction"),
    ],
)
def test_bad_params(tmp_path, params, key):
    with pytest.raises(DataConfigError, match=key):
        get_meta(DataOptions("UEA", data_dir=str(tmp_path), params=params))


def test_missing_files(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="zenodo.org/records/18723007"):
        load_splits(opts(tmp_path, family="CharTrajectories"))
    with pytest.raises(DatasetNotFoundError, match="NoSuchSet"):
        get_meta(opts(tmp_path, "NoSuchSet"))


# ---------------------------------------------------------------------------------------------
# fixture set: 2 channels, lengths 5..20, labels "1", "2", "10"


def test_variable_length_mask_labels_normalisation(tmp_path):
    files = write_uea(tmp_path, "Toy")
    splits = load_splits(opts(tmp_path, pad_mode="mask"))
    meta = splits.meta
    assert meta.input_shape == (3, 20) and meta.num_classes == 3
    assert meta.extra["classes"] == ["1", "2", "10"]  # numeric order, not "1" < "10" < "2"
    assert [len(splits.train), len(splits.val), len(splits.test)] == [24, 6, 12]
    # test split = the official TEST file, in order
    series, labels = files["TEST"]
    x_te, y_te = splits.test.tensors
    assert y_te.tolist() == [["1", "2", "10"].index(v) for v in labels]
    for i, s in enumerate(series):
        n = s.shape[1]
        assert torch.all(x_te[i, -1, :n] == 1) and torch.all(x_te[i, -1, n:] == 0)
        assert torch.all(x_te[i, :2, n:] == 0)  # zero padding
    # normalised with the observed training values: mean 0, std 1 per channel
    x_tr = splits.train.tensors[0]
    obs = x_tr[:, -1].bool()
    for c in range(2):
        v = x_tr[:, c][obs]
        assert abs(v.mean().item()) < 1e-5 and v.std().item() == pytest.approx(1.0, abs=1e-4)
    # the same affine map (training statistics) is applied to the test split
    raw = files["TEST"][0][1]
    n = raw.shape[1]
    z = x_te[1, :2, :n].double().numpy()
    slope = (z[:, 1:] - z[:, :-1]) / (raw[:, 1:] - raw[:, :-1])
    assert np.allclose(slope, slope[:, :1], rtol=1e-4)  # affine per channel


def test_exclude_mode_gives_an_observation_mask(tmp_path):
    files = write_uea(tmp_path, "Toy")
    splits = load_splits(opts(tmp_path))
    assert splits.meta.input_shape == (2, 20) and splits.meta.extra["observation_mask"]
    x, y, mask = splits.test.tensors
    reference = load_splits(opts(tmp_path, pad_mode="mask")).test.tensors[0]
    for i, s in enumerate(files["TEST"][0]):
        n = s.shape[1]
        assert mask[i].tolist() == [1.0] * n + [0.0] * (20 - n)
    torch.testing.assert_close(x, reference[:, :2])  # same values, mask not an input channel


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_timestamps_mode_keeps_observed_steps_and_their_times(tmp_path, rate):
    write_uea(tmp_path, "Toy")
    grid = load_splits(opts(tmp_path, pad_mode="mask", drop_rate=rate)).test.tensors[0]
    splits = load_splits(opts(tmp_path, pad_mode="timestamps", drop_rate=rate))
    x, _, mask, times = splits.test.tensors
    assert splits.meta.extra["timestamps"]
    for i in range(len(x)):
        observed = torch.nonzero(grid[i, -1])[:, 0]
        k = len(observed)
        assert mask[i].tolist() == [1.0] * k + [0.0] * (x.shape[-1] - k)
        assert times[i, :k].tolist() == observed.float().tolist()
        torch.testing.assert_close(x[i, :, :k], grid[i, :2, observed])
        assert torch.all(x[i, :, k:] == 0)


def test_no_validation_split(tmp_path):
    write_uea(tmp_path, "Toy")
    splits = load_splits(opts(tmp_path, val_fraction=0))
    assert [len(splits.train), len(splits.val), len(splits.test)] == [30, 0, 12]


def test_official_split_disjoint_reproducible(tmp_path):
    write_uea(tmp_path, "Toy")
    a, b = load_splits(opts(tmp_path)), load_splits(opts(tmp_path))
    c = load_splits(
        DataOptions(
            "UEA", data_dir=str(tmp_path), params={"uea_name": "Toy"}, split_seed=3, download=False
        )
    )
    rows = [{bytes(r.numpy().tobytes()) for r in s.tensors[0]} for s in (a.train, a.val)]
    assert not rows[0] & rows[1]
    assert torch.equal(a.val.tensors[0], b.val.tensors[0])
    assert not torch.equal(a.val.tensors[0], c.val.tensors[0])
    assert torch.bincount(a.val.tensors[1]).tolist() == [2, 2, 2]  # stratified 80/20


def test_unset_params_take_defaults(tmp_path):
    write_uea(tmp_path, "Toy")
    splits = load_splits(opts(tmp_path, pad_mode="", uea_split=None, val_fraction=-1, drop_rate=-1))
    assert [len(splits.train), len(splits.val), len(splits.test)] == [24, 6, 12]
    assert splits.meta.input_shape == (2, 20) and splits.meta.extra["pad_mode"] == "exclude"


def test_pooled_split(tmp_path):
    write_uea(tmp_path, "Toy", n_train=30, n_test=30)
    splits = load_splits(opts(tmp_path, uea_split="pooled"))
    assert [len(splits.train), len(splits.val), len(splits.test)] == [42, 9, 9]
    x, _ = all_rows(splits)
    assert len({bytes(r.numpy().tobytes()) for r in x}) == 60


def test_ffill_and_drop_rate(tmp_path):
    files = write_uea(tmp_path, "Toy")
    ff = load_splits(opts(tmp_path, pad_mode="ffill"))
    assert ff.meta.input_shape == (2, 20)
    x_te = ff.test.tensors[0]
    for i, s in enumerate(files["TEST"][0]):
        n = s.shape[1]
        assert torch.all(x_te[i, :, n:] == x_te[i, :, n - 1 : n])  # last value repeated
    drop = load_splits(opts(tmp_path, drop_rate=0.5, pad_mode="mask"))
    x_te = drop.test.tensors[0]
    assert drop.meta.input_shape == (3, 20)
    for i, s in enumerate(files["TEST"][0]):
        n = s.shape[1]
        assert int(x_te[i, -1].sum()) == n - round(0.5 * n)
        assert torch.all(x_te[i, :2][:, x_te[i, -1] == 0] == 0)
    again = load_splits(opts(tmp_path, drop_rate=0.5, pad_mode="mask"))
    assert torch.equal(again.test.tensors[0], x_te)


def test_missing_values_are_masked(tmp_path):
    series, labels = toy_series(12, 1, ("a", "b"), 10, 10, seed=0)
    series[0][0, 3] = np.nan
    for split in ("TRAIN", "TEST"):
        write_ts(
            tmp_path / "UEA" / "Gappy" / f"Gappy_{split}.ts", "Gappy", series, labels, ("a", "b")
        )
    splits = load_splits(opts(tmp_path, "Gappy", pad_mode="mask"))
    assert splits.meta.input_shape == (2, 10)  # missing values → variable → mask channel
    x = splits.test.tensors[0]
    assert x[0, 1, 3] == 0 and x[0, 0, 3] == 0 and torch.isfinite(x).all()
    excluded = load_splits(opts(tmp_path, "Gappy"))
    x, _, mask = excluded.test.tensors
    assert excluded.meta.input_shape == (1, 10) and mask[0, 3] == 0 and mask[0].sum() == 9
    assert x[0, 0, 3] == 0 and torch.isfinite(x).all()


def test_char_trajectories_from_files(tmp_path):
    classes = [chr(ord("a") + i) for i in range(20)]
    for split, n, seed in (("TRAIN", 60, 0), ("TEST", 40, 1)):
        series, labels = toy_series(n, 3, classes, 60, 182, seed)
        write_ts(
            tmp_path / "UEA" / "CharacterTrajectories" / f"CharacterTrajectories_{split}.ts",
            "CharacterTrajectories",
            series,
            labels,
            classes,
        )
    splits = load_splits(opts(tmp_path, family="CharTrajectories", pad_mode="mask"))
    assert splits.meta.input_shape == (4, 182) and splits.meta.num_classes == 20
    assert splits.train.tensors[0].shape[1:] == (4, 182) and len(splits.test) == 40


@pytest.mark.parametrize("source", ["zenodo", "zip"])
def test_char_trajectories_download(tmp_path, monkeypatch, source):
    classes = [str(i) for i in range(1, 21)]
    src = tmp_path / "src"
    for split, n, seed in (("TRAIN", 40, 0), ("TEST", 20, 1)):
        series, labels = toy_series(n, 3, classes, 60, 182, seed)
        write_ts(
            src / f"CharacterTrajectories_{split}.ts",
            "CharacterTrajectories",
            series,
            labels,
            classes,
        )
    served = tmp_path / "served"
    (served / "records" / "18723007" / "files").mkdir(parents=True)
    if source == "zenodo":
        for p in src.iterdir():
            shutil.copy(p, served / "records" / "18723007" / "files" / p.name)
    else:  # the Zenodo record is missing (404): the zip mirror is used
        with zipfile.ZipFile(served / "CharacterTrajectories.zip", "w") as zf:
            for p in src.iterdir():
                zf.write(p, p.name)
    data = tmp_path / "data"
    with serve_directory(served) as url:
        monkeypatch.setattr(uea, "ZENODO_URL", url + "/records/{id}/files/{file}?download=1")
        monkeypatch.setattr(uea, "ZIP_URL", url + "/{name}.zip")
        splits = load_splits(DataOptions("CharTrajectories", data_dir=str(data)))
    assert len(splits.test) == 20
    assert (data / "UEA" / "CharacterTrajectories" / "CharacterTrajectories_TRAIN.ts").is_file()


def test_user_copy_overrides_bundled(tmp_path):
    write_uea(
        tmp_path,
        "BasicMotions",
        channels=6,
        classes=("a", "b", "c", "d"),
        min_len=100,
        max_len=100,
        n_train=8,
        n_test=4,
    )
    splits = load_splits(opts(tmp_path, "BasicMotions"))
    assert len(splits.test) == 4 and splits.meta.extra["classes"] == ["a", "b", "c", "d"]


# ---------------------------------------------------------------------------------------------
# real data: BasicMotions ships with aeon (offline)


def test_basicmotions_real_data_learns(tmp_path):
    pytest.importorskip("aeon")
    splits = load_splits(opts(tmp_path / "none", "BasicMotions"))
    assert splits.meta.num_classes == 4 and splits.meta.input_shape == (6, 100)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [32, 8, 40]
    x_tr, y_tr = splits.train.tensors
    x_te, y_te = splits.test.tensors
    assert x_tr.shape == (32, 6, 100) and torch.bincount(y_te).tolist() == [10] * 4

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(6, 32, 7, padding=3),
        nn.ReLU(),
        nn.Conv1d(32, 32, 7, padding=3),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(32, 4),
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest and avoids contention
    try:
        start = time.perf_counter()
        for _ in range(60):  # ~1 s
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_tr), y_tr).backward()
            opt.step()
            if time.perf_counter() - start > 20:
                break
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        acc = (model(x_te).argmax(-1) == y_te).float().mean().item()
    assert acc >= 0.7, f"test accuracy {acc:.2f} (chance 0.25)"


def test_series_normalisation_and_scale_channels(tmp_path):
    files = write_uea(tmp_path, "Toy")
    z = load_splits(opts(tmp_path, normalize="series", pad_mode="mask")).test.tensors[0]
    scaled = load_splits(opts(tmp_path, normalize="series_scale", pad_mode="mask"))
    assert scaled.meta.input_shape == (7, 20)  # 2 z-normalised + 2 levels + 2 scales + mask
    xs = scaled.test.tensors[0]
    levels = []
    for i, s in enumerate(files["TEST"][0]):
        n = s.shape[1]
        zi = z[i, :2, :n].double().numpy()
        expected = (s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True)
        np.testing.assert_allclose(zi, expected, atol=1e-5)
        torch.testing.assert_close(xs[i, :2, :n], z[i, :2, :n])
        assert torch.all(xs[i, 2:6, :n] == xs[i, 2:6, :1])  # constant over the observed steps
        assert torch.all(xs[i, 2:6, n:] == 0) and torch.all(xs[i, -1, :n] == 1)
        levels.append(np.arcsinh(s.mean(1)))
    # the level channels are asinh(mean) up to one affine map per channel (training statistics)
    levels = np.array(levels)  # (n, 2)
    got = xs[:, 2:4, 0].double().numpy()
    for c in range(2):
        slope, offset = np.polyfit(levels[:, c], got[:, c], 1)
        np.testing.assert_allclose(levels[:, c] * slope + offset, got[:, c], atol=1e-4)
        assert slope > 0
