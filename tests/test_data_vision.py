"""Tests for the image dataset families (``ccnn.data.vision``, ``ccnn.data.imagenet32``).

Every loader reads tiny files written in its official on-disk format (``data_fixtures``); no
network access is needed (downloads go to a server on 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from ccnn.data import download as dl
from ccnn.data import imagenet32, transforms, vision
from ccnn.data.base import DataConfigError, DataOptions, get_meta, load_splits
from ccnn.data.datamodule import CCNNDataModule
from ccnn.data.download import DatasetNotFoundError
from ccnn.data.imagenet32 import IMAGENET_MEAN, IMAGENET_STD
from ccnn.data.vision import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    GRAY_MEAN,
    GRAY_STD,
    MNIST_MEAN,
    MNIST_STD,
)
from data_fixtures import (
    MNIST_FILES,
    closed_port,
    local_http_server,
    write_cifar10,
    write_cifar100,
    write_imagenet,
    write_mnist,
    write_stl10,
)

# ------------------------------------------------------------------------------------ helpers


def opts(name: str, root, data_type: str = "default", **kw) -> DataOptions:
    params = kw.pop("params", {})
    return DataOptions(
        name=name, data_type=data_type, data_dir=str(root), params=params, download=False, **kw
    )


def stack(ds, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(ds) if n is None else min(n, len(ds))
    xs, ys = zip(*(ds[i] for i in range(n)))
    return torch.stack(xs), torch.stack(ys)


def normalised(x_uint8: np.ndarray | torch.Tensor, mean, std) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x_uint8), dtype=torch.float64) / 255.0
    shape = (1, -1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float64).view(shape)
    s = torch.tensor(std, dtype=torch.float64).view(shape)
    return ((x - m) / s).float()


@pytest.fixture(autouse=True)
def _fixture_checksums(monkeypatch):
    """Fixture MNIST files are not the real ones: skip the md5 of present files."""
    monkeypatch.setattr(vision.MNIST, "resources", dict.fromkeys(vision.MNIST.resources))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One directory with fixtures of every family (written once per module)."""
    root = tmp_path_factory.mktemp("vision_data")
    arrays = {
        "MNIST": write_mnist(root / "MNIST" / "raw"),
        "CIFAR10": write_cifar10(root),
        "CIFAR100": write_cifar100(root),
        "STL10": write_stl10(root),
        "Imagenet16": write_imagenet(root / "Imagenet16", size=16),
    }
    return root, arrays


def split_indices(splits):
    return splits.train.indices, splits.val.indices


# ------------------------------------------------------------------------------------ meta / fake

META_CASES = [
    ("MNIST", "default", {}, (1, 28, 28), 10),
    ("MNIST", "sequence", {}, (1, 784), 10),
    ("MNIST", "sequence", {"permuted": True}, (1, 784), 10),
    ("CIFAR10", "default", {}, (3, 32, 32), 10),
    ("CIFAR10", "default", {"resolution": 16}, (3, 16, 16), 10),
    ("CIFAR10", "sequence", {}, (3, 1024), 10),
    ("CIFAR10", "default", {"grayscale": True}, (1, 32, 32), 10),
    ("CIFAR10", "sequence", {"grayscale": True}, (1, 1024), 10),
    ("CIFAR10", "sequence", {"noise_padded": True}, (96, 1000), 10),
    ("CIFAR100", "default", {}, (3, 32, 32), 100),
    ("CIFAR100", "sequence", {"noise_padded": True}, (96, 1000), 100),
    ("STL10", "default", {}, (3, 96, 96), 10),
    ("STL10", "default", {"resolution": 256}, (3, 256, 256), 10),
    ("Imagenet32", "default", {}, (3, 32, 32), 1000),
    ("Imagenet16", "default", {}, (3, 16, 16), 1000),
    ("Imagenet64", "default", {}, (3, 64, 64), 1000),
    ("Imagenet-k", "default", {"resolution": 16}, (3, 16, 16), 1000),
    ("Imagenet-k", "default", {}, (3, 32, 32), 1000),
]


@pytest.mark.parametrize("name,data_type,params,shape,classes", META_CASES)
def test_meta_and_fake_mode_without_files(tmp_path, name, data_type, params, shape, classes):
    o = opts(name, tmp_path / "nothing_here", data_type, params=params, fake=True)
    meta = get_meta(o)
    assert meta.input_shape == shape and meta.in_channels == shape[0]
    assert meta.num_classes == classes
    assert meta.data_dim == (1 if data_type == "sequence" else 2)
    splits = load_splits(o)
    x, y = splits.train[0]
    assert x.shape == shape and 0 <= int(y) < classes
    assert not (tmp_path / "nothing_here").exists()


@pytest.mark.parametrize(
    "name,data_type,params,augment,match",
    [
        ("MNIST", "default", {"permuted": True}, False, "permuted"),
        ("MNIST", "sequence", {"noise_padded": True}, False, "noise_padded"),
        ("MNIST", "default", {}, True, "augment"),
        ("MNIST", "pointcloud", {}, False, "data_type"),
        ("CIFAR10", "default", {"noise_padded": True}, False, "noise_padded"),
        ("CIFAR10", "default", {"resolution": "big"}, False, "resolution"),
        ("CIFAR10", "default", {"grayscale": "yes"}, False, "grayscale"),
        ("STL10", "sequence", {}, False, "data_type"),
        ("STL10", "default", {"grayscale": True}, False, "grayscale"),
        ("Imagenet-k", "default", {"resolution": 48}, False, "16, 32, 64"),
        ("Imagenet16", "default", {"resolution": 32}, False, "conflicts"),
    ],
)
def test_bad_options_raise_config_error(tmp_path, name, data_type, params, augment, match):
    with pytest.raises(DataConfigError, match=match):
        get_meta(opts(name, tmp_path, data_type, params=params, augment=augment))


def test_val_sizes_match_spec():
    assert vision.val_count(60_000, 60_000, 5_000) == 5_000  # MNIST 55k/5k
    assert vision.val_count(50_000, 50_000, 5_000) == 5_000  # CIFAR 45k/5k
    assert vision.val_count(5_000, 5_000, 500) == 500  # STL10 4.5k/0.5k
    assert imagenet32.val_count(1_281_167) == 10_000
    assert transforms.crop_padding(32) == 4 and transforms.crop_padding(96) == 12
    assert transforms.crop_padding(16) == 2 and transforms.crop_padding(256) == 32


# ------------------------------------------------------------------------------------ MNIST


@pytest.mark.parametrize("data_type", ["default", "sequence"])
def test_mnist_loads_official_idx(data_root, data_type):
    root, arrays = data_root
    a = arrays["MNIST"]
    splits = load_splits(opts("MNIST", root, data_type))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (110, 10, 30)
    xt, yt = stack(splits.test)
    assert xt.dtype == torch.uint8 and xt.shape == (30, 1, 28, 28)
    assert torch.equal(xt[:, 0], torch.from_numpy(a["test_images"]))
    assert torch.equal(yt, torch.from_numpy(a["test_labels"]).long())
    out = splits.batch_transform(xt, False)
    want = normalised(a["test_images"][:, None], MNIST_MEAN, MNIST_STD)
    if data_type == "sequence":
        want = want.reshape(30, 1, 784)
    assert out.shape == want.shape and torch.allclose(out, want, atol=1e-5)
    train_idx, val_idx = split_indices(splits)
    xtr, ytr = stack(splits.train, 5)
    assert torch.equal(xtr[:, 0], torch.from_numpy(a["train_images"][train_idx[:5].numpy()]))


def test_mnist_normalisation_affine_on_known_pixels(data_root):
    root, _ = data_root
    tf = load_splits(opts("MNIST", root)).batch_transform
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(1, 1, 28, 3)
    x = torch.cat([x] * 10, dim=-1)[..., :28].contiguous()
    out = tf(x, False)
    expect = (torch.tensor([0.0, 0.2, 1.0]) - 0.1307) / 0.3081
    assert torch.allclose(out[0, 0, 0, :3], expect, atol=1e-6)


def test_splits_disjoint_reproducible_and_seeded(data_root):
    root, _ = data_root
    a_train, a_val = split_indices(load_splits(opts("MNIST", root)))
    b_train, b_val = split_indices(load_splits(opts("MNIST", root)))
    c_train, c_val = split_indices(load_splits(opts("MNIST", root, split_seed=7)))
    assert torch.equal(a_train, b_train) and torch.equal(a_val, b_val)
    assert not torch.equal(a_val, c_val)
    assert set(a_train.tolist()).isdisjoint(a_val.tolist())
    assert sorted(a_train.tolist() + a_val.tolist()) == list(range(120))


def test_pmnist_one_fixed_permutation(data_root):
    root, arrays = data_root
    o = opts("MNIST", root, "sequence", params={"permuted": True})
    s1, s2 = load_splits(o), load_splits(o)
    perm = s1.state["permutation"]
    assert torch.equal(perm, s2.state["permutation"])
    assert sorted(perm.tolist()) == list(range(784)) and not torch.equal(perm, torch.arange(784))
    xt, _ = stack(s1.test, 4)
    plain = load_splits(opts("MNIST", root, "sequence")).batch_transform(xt, False)
    for training in (False, True):  # same permutation in training and evaluation
        out = s1.batch_transform(xt, training)
        assert torch.equal(out, plain[..., perm])
    other = load_splits(opts("MNIST", root, "sequence", params={"permuted": True}, split_seed=3))
    assert not torch.equal(other.state["permutation"], perm)


def test_pmnist_permutation_travels_with_datamodule_state(data_root):
    root, _ = data_root
    o = opts("MNIST", root, "sequence", params={"permuted": True})
    dm = CCNNDataModule(o, batch_size=8)
    state = dm.state_dict()
    assert torch.equal(state["permutation"], load_splits(o).state["permutation"])
    dm2 = CCNNDataModule(o, batch_size=8)
    dm2.load_state_dict(state)
    dm2.setup()  # same permutation: accepted
    dm3 = CCNNDataModule(o, batch_size=8)
    dm3.load_state_dict({"permutation": torch.arange(784)})
    with pytest.raises(ValueError, match="permutation"):
        dm3.setup()


def test_mnist_uncompressed_files_are_used(tmp_path):
    import gzip
    import shutil

    a = write_mnist(tmp_path / "MNIST" / "raw", n_train=24, n_test=6)
    for f in MNIST_FILES.values():
        gz = tmp_path / "MNIST" / "raw" / f
        with gzip.open(gz) as src, open(gz.with_suffix(""), "wb") as dst:
            shutil.copyfileobj(src, dst)
        gz.unlink()
    xt, _ = stack(load_splits(opts("MNIST", tmp_path)).test)
    assert torch.equal(xt[:, 0], torch.from_numpy(a["test_images"]))


def test_mnist_truncated_idx_is_config_error(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", n_train=24, n_test=6)
    p = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    import gzip

    p.write_bytes(gzip.compress(gzip.decompress(p.read_bytes())[:-10]))
    with pytest.raises(DataConfigError, match="truncated"):
        load_splits(opts("MNIST", tmp_path))


# ------------------------------------------------------------------------------------ CIFAR


@pytest.mark.parametrize(
    "name,mean,std,classes",
    [("CIFAR10", CIFAR10_MEAN, CIFAR10_STD, 10), ("CIFAR100", CIFAR100_MEAN, CIFAR100_STD, 100)],
)
def test_cifar_loads_pickles(data_root, name, mean, std, classes):
    root, arrays = data_root
    a = arrays[name]
    splits = load_splits(opts(name, root))
    assert len(splits.train) + len(splits.val) == len(a["train_x"])
    assert len(splits.val) == round(len(a["train_x"]) / 10)
    xt, yt = stack(splits.test)
    assert xt.dtype == torch.uint8 and xt.shape[1:] == (3, 32, 32)
    assert torch.equal(xt, torch.from_numpy(a["test_x"]))
    assert torch.equal(yt, torch.from_numpy(a["test_y"]))
    assert int(yt.max()) < classes
    out = splits.batch_transform(xt, False)
    assert torch.allclose(out, normalised(a["test_x"], mean, std), atol=1e-5)
    seq = load_splits(opts(name, root, "sequence")).batch_transform(xt, False)
    assert seq.shape == (len(xt), 3, 1024) and torch.allclose(seq, out.flatten(2))


def test_cifar_augmentation_only_in_training(data_root):
    root, _ = data_root
    splits = load_splits(opts("CIFAR10", root, augment=True))
    x, _ = stack(splits.val)
    plain = normalised(x, CIFAR10_MEAN, CIFAR10_STD)
    ev = splits.batch_transform(x, False)
    assert torch.allclose(ev, plain, atol=1e-5)  # validation never augmented
    assert torch.equal(splits.batch_transform(x, False), ev)
    torch.manual_seed(0)
    tr = splits.batch_transform(x, True)
    assert tr.shape == ev.shape and not torch.allclose(tr, ev)
    # every augmented image is a crop (of the symmetric padding) of the image or its mirror
    pad = torch.cat([plain[..., :4].flip(-1), plain, plain[..., -4:].flip(-1)], dim=-1)
    pad = torch.cat([pad[..., :4, :].flip(-2), pad, pad[..., -4:, :].flip(-2)], dim=-2)
    for i in range(len(x)):
        crops = [pad[i, :, oy : oy + 32, ox : ox + 32] for oy in range(9) for ox in range(9)]
        assert any(
            torch.allclose(tr[i], c, atol=1e-5) or torch.allclose(tr[i], c.flip(-1), atol=1e-5)
            for c in crops
        )
    noaug = load_splits(opts("CIFAR10", root, augment=False))
    assert torch.allclose(noaug.batch_transform(x, True), plain, atol=1e-5)


@pytest.mark.parametrize("data_type,shape", [("default", (1, 32, 32)), ("sequence", (1, 1024))])
def test_cifar_grayscale(data_root, data_type, shape):
    root, arrays = data_root
    a = arrays["CIFAR10"]
    splits = load_splits(opts("CIFAR10", root, data_type, params={"grayscale": True}))
    xt, _ = stack(splits.test)
    rgb = a["test_x"].astype(np.float64)
    gray = np.rint(0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])
    assert xt.dtype == torch.uint8 and xt.shape[1:] == (1, 32, 32)
    assert np.abs(xt[:, 0].numpy().astype(np.int64) - gray).max() <= 1  # rounding at .5
    out = splits.batch_transform(xt, False)
    assert out.shape[1:] == shape
    want = (xt.double() / 255 - GRAY_MEAN[0]) / GRAY_STD[0]
    assert torch.allclose(out, want.float().reshape(out.shape), atol=1e-5)


def test_cifar_noise_padded(data_root):
    root, _ = data_root
    splits = load_splits(opts("CIFAR10", root, "sequence", params={"noise_padded": True}))
    assert splits.meta.input_shape == (96, 1000)
    xt, _ = stack(splits.test)
    img = normalised(xt, CIFAR10_MEAN, CIFAR10_STD)  # (b, 3, 32, 32)
    out = splits.batch_transform(xt, False)
    assert out.shape == (len(xt), 96, 1000)
    # step r (a row), feature c*32 + w = pixel (c, r, w)
    for c, r, w in [(0, 0, 0), (2, 5, 31), (1, 31, 7)]:
        assert torch.allclose(out[:, c * 32 + w, r], img[:, c, r, w])
    noise = out[..., 32:]
    assert abs(noise.mean().item()) < 0.05 and abs(noise.std().item() - 1) < 0.05
    assert torch.equal(splits.batch_transform(xt, False), out)  # evaluation: reproducible
    t1, t2 = splits.batch_transform(xt, True), splits.batch_transform(xt, True)
    assert torch.equal(t1[..., :32], out[..., :32]) and not torch.equal(t1[..., 32:], t2[..., 32:])


def test_cifar_resolution_resizes_on_device(data_root):
    root, _ = data_root
    splits = load_splits(opts("CIFAR10", root, params={"resolution": 16}, augment=True))
    xt, _ = stack(splits.test, 4)
    for training in (False, True):
        assert splits.batch_transform(xt, training).shape == (4, 3, 16, 16)
    # a constant image stays constant after resizing
    const = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    out = splits.batch_transform(const, False)
    want = normalised(const[:, :, :1, :1], CIFAR10_MEAN, CIFAR10_STD)
    assert torch.allclose(out, want.expand_as(out), atol=1e-5)


def test_cifar_pickle_with_code_is_refused(tmp_path):
    write_cifar10(tmp_path, per_batch=2, n_test=2)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": [0]}, f)
    with pytest.raises(DataConfigError, match="refusing"):
        load_splits(opts("CIFAR10", tmp_path))


# ------------------------------------------------------------------------------------ STL10


def test_stl10_loads_binary(data_root):
    root, arrays = data_root
    a = arrays["STL10"]
    splits = load_splits(opts("STL10", root, augment=True))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 4, 16)
    xt, yt = stack(splits.test)
    assert xt.dtype == torch.uint8 and xt.shape == (16, 3, 96, 96)
    assert torch.equal(xt, torch.from_numpy(a["test_x"]))  # column-major decoded correctly
    assert torch.equal(yt, torch.from_numpy(a["test_y"])) and int(yt.min()) == 0
    train_idx, _ = split_indices(splits)
    tr = a["train_x"][train_idx.numpy()].astype(np.float64) / 255
    mean, std = tr.mean(axis=(0, 2, 3)), tr.std(axis=(0, 2, 3))
    assert np.allclose(splits.meta.extra["mean"], mean) and np.allclose(
        splits.meta.extra["std"], std
    )
    out = splits.batch_transform(xt, False)
    assert torch.allclose(out, normalised(xt, mean, std), atol=1e-5)
    assert splits.batch_transform(xt[:2], True).shape == (2, 3, 96, 96)


def test_stl10_resolution_256(data_root):
    root, _ = data_root
    splits = load_splits(opts("STL10", root, params={"resolution": 256}))
    assert splits.meta.input_shape == (3, 256, 256)
    xt, _ = stack(splits.test, 2)
    assert splits.batch_transform(xt, False).shape == (2, 3, 256, 256)


# ------------------------------------------------------------------------------------ ImageNet


@pytest.mark.parametrize("name,params", [("Imagenet16", {}), ("Imagenet-k", {"resolution": 16})])
def test_imagenet_npz(data_root, name, params):
    root, arrays = data_root
    a = arrays["Imagenet16"]
    splits = load_splits(opts(name, root, params=params, augment=True))
    n = len(a["train_x"])
    assert len(splits.val) == n // 10 and len(splits.train) == n - n // 10
    assert len(splits.test) == len(a["test_x"])
    xt, yt = stack(splits.test)
    assert xt.dtype == torch.uint8 and xt.shape[1:] == (3, 16, 16)
    assert torch.equal(xt, torch.from_numpy(a["test_x"]))
    assert torch.equal(yt, torch.from_numpy(a["test_y"]))
    train_idx, _ = split_indices(splits)
    xtr, ytr = stack(splits.train)
    assert torch.equal(xtr, torch.from_numpy(a["train_x"][train_idx.numpy()]))
    assert torch.equal(ytr, torch.from_numpy(a["train_y"][train_idx.numpy()]))
    out = splits.batch_transform(xt, False)
    assert torch.allclose(out, normalised(xt, IMAGENET_MEAN, IMAGENET_STD), atol=1e-5)
    assert (root / "Imagenet16" / ".ccnn_cache" / "imagenet16_v1.pt").is_file()


def test_imagenet_cache_rebuilt_when_corrupt(tmp_path):
    a = write_imagenet(tmp_path / "Imagenet16", size=16, per_batch=3, n_val=4)
    o = opts("Imagenet16", tmp_path)
    load_splits(o)
    cache = tmp_path / "Imagenet16" / ".ccnn_cache" / "imagenet16_v1.pt"
    cache.write_bytes(b"corrupt")
    xt, _ = stack(load_splits(o).test)
    assert torch.equal(xt, torch.from_numpy(a["test_x"]))
    assert cache.stat().st_size > 100


def test_imagenet_found_in_root_itself(tmp_path):
    write_imagenet(tmp_path, size=16, per_batch=2, n_val=3)
    assert len(load_splits(opts("Imagenet16", tmp_path)).test) == 3


def test_imagenet_pickle_release(tmp_path):
    a = write_imagenet(tmp_path / "Imagenet32", size=32, per_batch=2, n_val=3, fmt="pickle")
    splits = load_splits(opts("Imagenet-k", tmp_path, params={"resolution": 32}))
    xt, yt = stack(splits.test)
    assert torch.equal(xt, torch.from_numpy(a["test_x"]))
    assert torch.equal(yt, torch.from_numpy(a["test_y"]))


def test_imagenet_wrong_resolution_files(tmp_path):
    write_imagenet(tmp_path / "Imagenet32", size=16, per_batch=2, n_val=3)
    with pytest.raises(DataConfigError, match="expected"):
        load_splits(opts("Imagenet32", tmp_path))


def test_imagenet_missing_explains_manual_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits(opts("Imagenet32", tmp_path))
    msg = str(err.value)
    assert "image-net.org" in msg and "login" in msg
    assert "train_data_batch_1.npz" in msg and "val_data.npz" in msg
    assert str(tmp_path / "Imagenet32") in msg


# ------------------------------------------------------------------------------------ missing


@pytest.mark.parametrize(
    "name,url_part,file_part",
    [
        ("MNIST", "ossci-datasets.s3.amazonaws.com/mnist", "train-images-idx3-ubyte.gz"),
        ("CIFAR10", "cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz"),
        ("CIFAR100", "cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python.tar.gz"),
        ("STL10", "stanford.edu/~acoates/stl10/stl10_binary.tar.gz", "stl10_binary.tar.gz"),
    ],
)
def test_missing_files_without_download(tmp_path, name, url_part, file_part):
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits(opts(name, tmp_path / "root"))
    msg = str(err.value)
    assert url_part in msg and file_part in msg and str(tmp_path / "root") in msg
    assert "download=false" in msg


# ------------------------------------------------------------------------------------ download


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_BACKOFF", 0.0)


def test_mnist_download_through_fetch(tmp_path, monkeypatch, no_backoff):
    src = tmp_path / "served"
    a = write_mnist(src, n_train=24, n_test=6)
    md5s = {f: hashlib.md5((src / f).read_bytes()).hexdigest() for f in MNIST_FILES.values()}
    with local_http_server() as srv:
        for f in MNIST_FILES.values():
            srv.add(f"mnist/{f}", (src / f).read_bytes(), truncate_first=1)
        dead = f"http://127.0.0.1:{closed_port()}/"
        monkeypatch.setattr(vision.MNIST, "mirrors", (dead, f"{srv.base_url}/mnist/"))
        monkeypatch.setattr(vision.MNIST, "resources", md5s)
        root = tmp_path / "data"
        o = DataOptions("MNIST", data_dir=str(root), download=True)
        splits = load_splits(o)
    xt, yt = stack(splits.test)
    assert torch.equal(xt[:, 0], torch.from_numpy(a["test_images"]))
    assert torch.equal(yt, torch.from_numpy(a["test_labels"]).long())
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(
        MNIST_FILES.values()
    )


def test_mnist_download_unreachable(tmp_path, monkeypatch, no_backoff):
    dead = f"http://127.0.0.1:{closed_port()}/mnist/"
    monkeypatch.setattr(vision.MNIST, "mirrors", (dead,))
    with pytest.raises(DatasetNotFoundError) as err:
        load_splits(DataOptions("MNIST", data_dir=str(tmp_path), download=True))
    assert dead in str(err.value) and str(tmp_path / "MNIST" / "raw") in str(err.value)


def test_cifar10_download_and_extract(tmp_path, monkeypatch, no_backoff):
    a = write_cifar10(tmp_path / "src", per_batch=4, n_test=5)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    body = buf.getvalue()
    with local_http_server() as srv:
        url = srv.add("cifar-10-python.tar.gz", body)
        monkeypatch.setattr(vision.CIFAR10, "url", url)
        monkeypatch.setattr(vision.CIFAR10, "md5", hashlib.md5(body).hexdigest())
        splits = load_splits(DataOptions("CIFAR10", data_dir=str(tmp_path / "d"), download=True))
    xt, _ = stack(splits.test)
    assert torch.equal(xt, torch.from_numpy(a["test_x"]))


# ------------------------------------------------------------------------------------ transforms


def test_transform_pickles_after_use(data_root):
    root, _ = data_root
    splits = load_splits(opts("CIFAR10", root, "sequence", params={"noise_padded": True}))
    xt, _ = stack(splits.test, 3)
    out = splits.batch_transform(xt, False)
    clone = pickle.loads(pickle.dumps(splits.batch_transform))
    assert torch.equal(clone(xt, False), out)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "name,data_type,params",
    [
        ("CIFAR10", "sequence", {"noise_padded": True}),
        ("CIFAR10", "default", {"resolution": 16}),
        ("STL10", "default", {"resolution": 256}),
        ("MNIST", "sequence", {"permuted": True}),
    ],
)
def test_batch_transforms_on_cuda(data_root, name, data_type, params):
    root, _ = data_root
    splits = load_splits(opts(name, root, data_type, params=params, augment=name != "MNIST"))
    x, _ = stack(splits.test, 4)
    cpu = splits.batch_transform(x, False)
    gpu = splits.batch_transform(x.cuda(), False)
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
    n = 32 if params.get("noise_padded") else cpu.shape[-1]  # noise streams differ per device
    assert torch.allclose(gpu[..., :n].cpu(), cpu[..., :n], atol=1e-4)
    assert torch.equal(splits.batch_transform(x.cuda(), False), gpu)
    assert splits.batch_transform(x.cuda(), True).shape == cpu.shape
