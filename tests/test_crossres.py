"""Cross-resolution: resizing data modules, evaluation at another resolution, and
``run_crossres.py`` writing its three figures."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import ccnn.data  # noqa: F401
from ccnn.apps import flexconv_main
from ccnn.apps.flexconv_config import build_datamodule, build_network
from ccnn.apps.flexconv_main import compose, run_crossres
from ccnn.data.base import DataOptions
from ccnn.data.resize import ResizedDataModule, ResizeTransform, gaussian_blur, resize
from ccnn.nn.resolution import set_resolution
from ccnn.nn.srf import SRFConv
from ccnn.train.crossres import evaluate, evaluate_at_resolution


def test_resize_modes_and_shapes():
    x = torch.rand(2, 3, 8, 8)
    for mode in ("bilinear", "nearest", "bicubic", "area"):
        assert resize(x, 16, mode).shape == (2, 3, 16, 16)
        assert resize(x, 4, mode).shape == (2, 3, 4, 4)
    const = torch.full((1, 1, 8, 8), 0.7)
    assert torch.allclose(resize(const, 16), const.new_full((1, 1, 16, 16), 0.7))
    assert torch.equal(resize(x, 16, "nearest")[..., ::2, ::2], x)
    with pytest.raises(ValueError, match="interpolation"):
        resize(x, 16, "lanczos")


def test_gaussian_blur_keeps_constants_and_smooths():
    const = torch.full((1, 2, 9, 9), 3.0)
    assert torch.allclose(gaussian_blur(const, 1.0), const)
    impulse = torch.zeros(1, 1, 9, 9)
    impulse[..., 4, 4] = 1.0
    blurred = gaussian_blur(impulse, 1.0)
    assert blurred.sum() == pytest.approx(1.0, abs=1e-5) and blurred.max() < 0.2


def test_resize_transform_wraps_the_family_transform():
    inner = lambda x, training: x * 2  # noqa: E731
    t = ResizeTransform(inner, 16, "nearest", blur_after=0.0)
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(t(x, False)[..., ::2, ::2], 2 * x)


def test_resized_datamodule_on_digits_shares_data():
    dm = ResizedDataModule(DataOptions("Digits"), resolution=16, batch_size=32)
    assert dm.meta.input_shape == (1, 16, 16) and dm.native_meta.input_shape == (1, 8, 8)
    dm.setup()
    x, _ = next(iter(dm.test_dataloader()))
    assert dm.splits.batch_transform(x, False).shape == (32, 1, 16, 16)
    other = dm.at_resolution(8)
    assert other.meta.input_shape == (1, 8, 8)
    assert other.splits.train is dm.splits.train  # nothing re-read
    assert other.splits.batch_transform(x, False).shape == (32, 1, 8, 8)
    with pytest.raises(ValueError, match="2D images"):
        ResizedDataModule(DataOptions("Digits", data_type="sequence"), resolution=16, batch_size=4)


def _digits_net(resolution: int = 8):
    cfg = compose(["experiment=digits", "device=cpu"])
    dm = build_datamodule(cfg, resolution=resolution)
    torch.manual_seed(0)
    return cfg, dm, build_network(cfg, dm.meta)


def test_evaluate_at_resolution_resamples_and_restores():
    cfg, dm8, net = _digits_net()
    dm16 = dm8.at_resolution(16)
    base = evaluate(net, dm8)
    assert 0.0 <= base["acc"] <= 1.0 and base["loss"] > 0
    evaluate_at_resolution(net, dm16, 2.0)
    assert net.stem._resolution_scale is None  # restored
    assert evaluate(net, dm8) == base
    # the resampled kernel spans the same extent with twice the density
    set_resolution(net, 2.0)
    axes, factor = net.stem.sampling_grid()
    assert len(axes[0]) == 17 and factor == pytest.approx(0.25)
    set_resolution(net, None)


def test_resolution_reaches_srf_layers():
    net = torch.nn.Sequential(SRFConv(1, 2, 2), SRFConv(2, 2, 2))
    assert set_resolution(net, 2.0) == 2
    assert net[0].kernel_size() == (2 * 5 + 1,) * 2  # sigma 1 -> 2 samples: half-size ceil(4.5)


@pytest.fixture
def fast_trainer(monkeypatch):
    original = flexconv_main.trainer_settings

    def settings(*args, **kwargs):
        return replace(original(*args, **kwargs), plot_kernels=False, progress_bar=False)

    monkeypatch.setattr(flexconv_main, "trainer_settings", settings)


def test_crossres_on_digits_writes_the_three_figures(tmp_path, fast_trainer):
    cfg = compose(
        ["device=cpu", "train.epochs=1", "cross_res.finetune_epochs=1", "train.limit_batches=3"],
        crossres=True,
    )
    assert cfg.dataset == "Digits" and cfg.kernel.regularize  # the default crossres experiment
    results = run_crossres(cfg, run_dir=str(tmp_path))
    saved = json.loads((tmp_path / "results.json").read_text())
    for key in (
        "source_acc",
        "target_acc_before_finetune",
        "change_before_finetune",
        "target_acc_after_finetune",
    ):
        assert 0.0 <= abs(saved[key]) <= 1.0, key
    assert saved["change_before_finetune"] == pytest.approx(
        saved["target_acc_before_finetune"] - saved["source_acc"]
    )
    assert {"params", "val", "test", "epochs", "wall_time_s", "config"} <= set(saved)
    assert saved["epochs"] == 2 and results["source_res"] == 8 and results["target_res"] == 16
    assert (tmp_path / "source_network.pt").exists()
    report = json.loads((tmp_path / "frequency_report_source.json").read_text())
    assert len(report) == 7 and all(r["kernel_size"] == [9, 9] for r in report)


def test_crossres_resnet_on_fake_cifar(tmp_path, fast_trainer):
    args = [
        "dataset=CIFAR10",
        "net.type=CIFARResNet20",
        "device=cpu",
        "dataset_params.fake=true",
        "train.batch_size=2",
        "train.epochs=1",
        "train.lr=0.01",
        "train.limit_batches=2",
        "cross_res.source_res=16",
        "cross_res.target_res=32",
        "cross_res.finetune_epochs=0",
        "cross_res.interpolation=nearest",
        "cross_res.resize_blur=true",
    ]
    results = run_crossres(compose(args, crossres=True), run_dir=str(tmp_path))
    assert results["target_acc_after_finetune"] is None
    assert results["test"]["acc"] == results["target_acc_before_finetune"]
