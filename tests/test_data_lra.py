"""LRA loaders (ListOps, IMDB, PathFinder) on tiny files in the release formats."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ccnn.data import lra
from ccnn.data.base import DataConfigError, DataOptions, get_meta, load_splits
from ccnn.data.download import DatasetNotFoundError
from sequence_fixtures import (
    pathfinder_image,
    serve_directory,
    write_imdb,
    write_listops,
    write_pathfinder,
)


def opts(name: str, root: Path, data_type: str = "default", **params) -> DataOptions:
    return DataOptions(name, data_type=data_type, data_dir=str(root), params=params, download=False)


def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(ds, "tensors"):
        return ds.tensors
    xs, ys = zip(*[ds[i] for i in range(len(ds))])
    return torch.stack(xs), torch.stack(ys)


# ---------------------------------------------------------------------------------------------
# meta


@pytest.mark.parametrize(
    "name, data_type, params, shape, classes",
    [
        ("ListOps", "default", {}, (1, 2048), 10),
        ("IMDB", "default", {}, (1, 4096), 2),
        ("PathFinder", "sequence", {"resolution": 32}, (1, 1024), 2),
        ("PathFinder", "default", {"resolution": 32}, (1, 32, 32), 2),
        ("PathFinder", "sequence", {"resolution": 128}, (1, 16384), 2),
    ],
)
def test_meta_without_files(tmp_path, name, data_type, params, shape, classes):
    meta = get_meta(opts(name, tmp_path / "none", data_type, **params))
    assert meta.input_shape == shape and meta.num_classes == classes
    assert meta.data_dim == len(shape) - 1
    if name != "PathFinder":
        assert meta.extra["pad_id"] == 0 and meta.extra["token_ids"]
        assert meta.extra["vocab_size"] == {"ListOps": 17, "IMDB": 256}[name]


@pytest.mark.parametrize(
    "name, params, key",
    [
        ("PathFinder", {"resolution": 48}, "resolution"),
        ("IMDB", {"lra_val": "dev"}, "lra_val"),
        ("IMDB", {"val_fraction": 1.5}, "val_fraction"),
    ],
)
def test_bad_params(tmp_path, name, params, key):
    with pytest.raises(DataConfigError, match=key):
        get_meta(opts(name, tmp_path, **params))


@pytest.mark.parametrize(
    "name, file",
    [("ListOps", "lra_release"), ("IMDB", "aclImdb_v1"), ("PathFinder", "lra_release")],
)
def test_missing_files(tmp_path, name, file):
    with pytest.raises(DatasetNotFoundError, match=file):
        load_splits(opts(name, tmp_path))


# ---------------------------------------------------------------------------------------------
# ListOps


def test_listops_tokens_and_splits(tmp_path):
    known = "( ( [MAX 2 9 ] 3 ) [SM 0 1 ] )"
    write_listops(tmp_path, extra_rows={"test": [(known, 9)]})
    splits = load_splits(opts("ListOps", tmp_path))
    assert [len(splits.train), len(splits.val), len(splits.test)] == [30, 10, 11]
    x, y = splits.test.tensors
    assert x.shape == (11, 1, 2048) and x.dtype == torch.uint8
    v = lra.LISTOPS_VOCAB
    ids = [v["[MAX"], v["2"], v["9"], v["]"], v["3"], v["[SM"], v["0"], v["1"], v["]"], lra.EOS_ID]
    assert x[-1, 0, : len(ids)].tolist() == ids
    assert torch.all(x[-1, 0, len(ids) :] == 0) and int(y[-1]) == 9
    assert torch.all((x == lra.EOS_ID).sum(-1) == 1)  # exactly one EOS per sequence
    assert int(x.max()) < get_meta(opts("ListOps", tmp_path)).extra["vocab_size"]
    z = splits.batch_transform(x, True)
    assert z.dtype == torch.float32 and torch.equal(z.long(), x.long())


def test_listops_truncation_and_unknown_token(tmp_path):
    long_expr = "( [MAX " + " ".join(["1"] * 3000) + " ] )"
    write_listops(tmp_path, sizes=(2, 2, 2), extra_rows={"train": [(long_expr, 1)]})
    x, _ = load_splits(opts("ListOps", tmp_path)).train.tensors
    assert x.shape[-1] == 2048 and int(x[-1, 0, -1]) == lra.EOS_ID
    with pytest.raises(DataConfigError, match="unknown token"):
        lra.tokenize_listops("[MIN 1 [FOO 2 ] ]")


def test_listops_cache_stale_and_corrupt(tmp_path, monkeypatch):
    write_listops(tmp_path, sizes=(3, 2, 2))
    calls = []
    real = lra.read_listops_tsv
    monkeypatch.setattr(lra, "read_listops_tsv", lambda p: calls.append(p) or real(p))
    first = load_splits(opts("ListOps", tmp_path)).train.tensors[0]
    load_splits(opts("ListOps", tmp_path))
    assert len(calls) == 3
    monkeypatch.setattr(lra, "LISTOPS_CACHE_VERSION", "new")
    load_splits(opts("ListOps", tmp_path))
    assert len(calls) == 6
    (tmp_path / "lra_release" / "listops-1000" / "listops_tokens.pt").write_bytes(b"\x00junk")
    again = load_splits(opts("ListOps", tmp_path)).train.tensors[0]
    assert len(calls) == 9 and torch.equal(first, again)


# ---------------------------------------------------------------------------------------------
# IMDB


def test_imdb_bytes_labels_and_holdout(tmp_path):
    base = write_imdb(tmp_path, per_class=10)
    splits = load_splits(opts("IMDB", tmp_path))
    assert [len(splits.train), len(splits.val), len(splits.test)] == [18, 2, 20]
    x, y = splits.test.tensors
    assert x.shape == (20, 1, 4096) and x.dtype == torch.uint8
    assert torch.bincount(y).tolist() == [10, 10]  # unsup reviews are ignored
    first = sorted((base / "test" / "neg").glob("*.txt"))[0].read_bytes()
    row = x[0, 0]
    n = min(len(first), 4096)
    assert bytes(row[:n].tolist()) == first[:n]
    assert "é".encode() in first and torch.all(row[n:] == 0)
    assert any(len(p.read_bytes()) > 4096 for p in (base / "test" / "neg").glob("*.txt"))
    # held-out validation from train: disjoint, stratified, reproducible
    tr, va = splits.train.tensors[0], splits.val.tensors[0]
    rows_tr = {bytes(r.tolist()) for r in tr[:, 0]}
    assert not any(bytes(r.tolist()) in rows_tr for r in va[:, 0])
    assert torch.bincount(splits.val.tensors[1]).tolist() == [1, 1]
    again = load_splits(opts("IMDB", tmp_path))
    assert torch.equal(again.val.tensors[0], va)
    # LRA protocol: validation = test
    lra_splits = load_splits(opts("IMDB", tmp_path, lra_val="test"))
    assert lra_splits.val is lra_splits.test and len(lra_splits.train) == 20


# ---------------------------------------------------------------------------------------------
# PathFinder


@pytest.mark.parametrize("data_type", ["sequence", "default"])
def test_pathfinder_in_memory(tmp_path, data_type):
    base, listed = write_pathfinder(tmp_path, res=32, n_files=3, per_file=10, empty=1)
    with pytest.warns(UserWarning, match="skipped 1"):
        splits = load_splits(opts("PathFinder", tmp_path, data_type, resolution=32))
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(sizes) == 29 and sizes[1] > 0 and sizes[2] > 0 and sizes[0] >= 0.75 * 29
    x, y = tensors(splits.train)
    assert x.shape[1:] == (1, 32, 32) and x.dtype == torch.uint8
    # images and labels match the metadata (image k of the listing has content seed k)
    all_x = torch.cat([tensors(s)[0] for s in (splits.train, splits.val, splits.test)])
    all_y = torch.cat([tensors(s)[1] for s in (splits.train, splits.val, splits.test)])
    for k in (1, 5, 29):
        img = torch.from_numpy(pathfinder_image(k, 32))
        hits = [i for i in range(len(all_x)) if torch.equal(all_x[i, 0], img)]
        assert len(hits) == 1 and int(all_y[hits[0]]) == listed[k][1]
    z = splits.batch_transform(x, True)
    expected = (1, 1024) if data_type == "sequence" else (1, 32, 32)
    assert z.shape[1:] == expected
    assert z.min() >= -1 and z.max() <= 1
    assert torch.allclose(z.reshape(len(x), -1), (x.float().reshape(len(x), -1) / 255 - 0.5) / 0.5)


def test_pathfinder_splits_disjoint_reproducible(tmp_path):
    write_pathfinder(tmp_path, res=32, n_files=4, per_file=10)
    a = load_splits(opts("PathFinder", tmp_path, "sequence"))
    b = load_splits(opts("PathFinder", tmp_path, "sequence"))
    rows = [{bytes(t.flatten().tolist()) for t in tensors(s)[0]} for s in (a.train, a.val, a.test)]
    assert [len(r) for r in rows] == [32, 4, 4]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    assert torch.equal(tensors(a.test)[0], tensors(b.test)[0])


def test_pathfinder_from_files_at_high_resolution(tmp_path):
    write_pathfinder(tmp_path, res=128, n_files=2, per_file=10)
    splits = load_splits(opts("PathFinder", tmp_path, "sequence", resolution=128))
    assert isinstance(splits.train, torch.utils.data.Subset)
    x, y = tensors(splits.val)
    assert x.shape == (2, 1, 128, 128)
    assert splits.batch_transform(x, False).shape == (2, 1, 16384)


# ---------------------------------------------------------------------------------------------
# download


def test_lra_download_from_local_server(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_listops(src, sizes=(4, 2, 2))
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "lra_release.gz", "w:gz") as tar:
        tar.add(src / "lra_release", arcname="lra_release")
    data = tmp_path / "data"
    with serve_directory(served) as url:
        monkeypatch.setattr(lra, "LRA_URL", f"{url}/lra_release.gz")
        o = DataOptions("ListOps", data_dir=str(data), download=True)
        splits = load_splits(o)
    assert len(splits.train) == 4
    np.testing.assert_array_equal(
        splits.train.tensors[0].numpy(),
        load_splits(opts("ListOps", src)).train.tensors[0].numpy(),
    )
