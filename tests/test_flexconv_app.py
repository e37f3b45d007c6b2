"""The FlexConv app (``run_experiment.py``/``run_crossres.py``): every paper command composes,
equals its named experiment, builds the network with the derived parameter count and
smoke-runs on fake data; configuration errors are clear; the optimiser groups are right."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import ccnn.data  # noqa: F401
from ccnn.apps import flexconv_main
from ccnn.apps.common import ConfigError
from ccnn.apps.flexconv_config import (
    build_datamodule,
    build_network,
    loss_terms,
    optim_settings,
    resolve_horizon,
    validate,
    validate_with_meta,
)
from ccnn.apps.flexconv_main import compose, prepare_argv, run, run_crossres
from ccnn.train.losses import kernel_l2_norm
from ccnn.train.optim import build_optimizer
from conftest import seed_commands

COMMANDS = seed_commands("flexconv")
ROOT = Path(__file__).resolve().parents[1]


def is_crossres(name: str) -> bool:
    return COMMANDS[name]["script"] == "run_crossres.py"


def fake_args(name: str, *extra: str) -> list[str]:
    """The verbatim command on CPU with fake data and a tiny batch (Hydra: the last value wins)."""
    return [
        *COMMANDS[name]["args"],
        "device=cpu",
        "dataset_params.fake=true",
        "train.batch_size=2",
        *extra,
    ]


def built(name: str, *extra: str):
    cr = is_crossres(name)
    cfg = compose(fake_args(name, *extra), crossres=cr)
    validate(cfg, crossres=cr)
    dm = build_datamodule(cfg, resolution=cfg.cross_res.source_res if cr else None)
    validate_with_meta(cfg, dm.meta)
    return cfg, dm, build_network(cfg, dm.meta)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# -- independent parameter-count derivations (SPEC §3) ---------------------------------------


def kernel_net_params(kind: str, d: int, h: int, layers: int, out: int) -> int:
    if kind == "MAGNet":  # (L+1) filters: mu (h,d), gamma (h,d), linear d->h; L hidden h->h
        body = (layers + 1) * (h * d + h * d + h * d + h) + layers * (h * h + h)
    elif kind == "Gabor":  # isotropic: gamma (h, 1)
        body = (layers + 1) * (h * d + h + h * d + h) + layers * (h * h + h)
    elif kind == "SIREN":  # num_layers linears in all: d->h, (L-2) h->h, output
        body = (d * h + h) + (layers - 2) * (h * h + h)
    else:
        raise ValueError(kind)
    return body + h * out + out


def conv_params(cfg, c_in: int, c_out: int, d: int) -> int:
    conv = cfg.conv.type
    if conv == "Conv":
        return c_out * c_in * cfg.conv.horizon**d + c_out
    if conv == "SRF":  # 10 Gaussian-derivative basis functions up to order 3 in 2D, one scale
        return c_out * c_in * 10 + 1 + c_out
    k = cfg.kernel
    mask = 2 * d if conv == "FlexConv" else 0  # learned mean and sigma per dim
    return kernel_net_params(k.type, d, k.no_hidden, k.no_layers, c_in * c_out) + mask + c_out


def flexnet_params(cfg, c_in: int, classes: int, d: int = 2) -> int:
    from ccnn.models.blocks import block_widths

    h = cfg.net.no_hidden
    total = conv_params(cfg, c_in, h, d) + 2 * h
    prev = h
    for w in block_widths(h, cfg.net.no_blocks, list(cfg.net.block_width_factors)):
        total += conv_params(cfg, prev, w, d) + conv_params(cfg, w, w, d) + 4 * w
        total += prev * w + w if prev != w else 0
        prev = w
    return total + prev * classes + classes


# CIFAR ResNets: He et al.'s option-A counts (10 classes), +54*(classes-10)... from the model.
RESNET_COUNTS = {
    ("CIFARResNet32", 10): 464_154,
    ("CIFARResNet44", 10): 658_586,
    ("CIFARResNet32", 1000): 528_504,
}
PUBLISHED = {"cifar10_flexnet7": 671_650}


def test_derivation_matches_published_flexnet7():
    cfg = compose(COMMANDS["cifar10_flexnet7"]["args"])
    assert flexnet_params(cfg, 3, 10) == 671_650
    # SPEC's worked stem: FlexConv(3->24) = 6,468
    assert conv_params(cfg, 3, 24, 2) == 6_468


@pytest.mark.parametrize("name", list(COMMANDS))
def test_named_experiment_equals_verbatim_command(name):
    verbatim = compose(COMMANDS[name]["args"], crossres=is_crossres(name))
    named = compose([f"experiment={name}"], crossres=is_crossres(name))
    assert OmegaConf.to_container(verbatim) == OmegaConf.to_container(named)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_paper_command_builds_the_derived_network(name):
    cfg, dm, net = built(name)
    meta = dm.meta
    if cfg.net.type.startswith("CIFARResNet"):
        expected = RESNET_COUNTS[(cfg.net.type, meta.num_classes)]
    else:
        expected = flexnet_params(cfg, meta.in_channels, meta.num_classes)
    assert n_params(net) == expected
    if name in PUBLISHED:
        assert n_params(net) == PUBLISHED[name]
    if is_crossres(name):
        assert meta.input_shape[1:] == (cfg.cross_res.source_res,) * 2


def _flexnet_magnet_commands() -> list[str]:
    return [
        name
        for name, c in COMMANDS.items()
        if "conv.type=FlexConv" in c["args"] and "kernel.type=MAGNet" in c["args"]
    ]


@pytest.mark.parametrize("name", _flexnet_magnet_commands())
def test_flexnet_commands_build_the_registry_model(name):
    """The app builds through the registry; each FlexConv + MAGNet paper command builds
    ``create_model("flexnet_7")`` given only the command's per-task settings (data, kernel
    size = horizon; depth and widths for the 5-block ImageNet32 net): same modules, same
    initial weights."""
    from ccnn import create_model

    torch.manual_seed(0)
    cfg, dm, app = built(name)
    meta, n = dm.meta, cfg.net
    task = {}
    if n.no_blocks != 7:
        task = {
            "hidden_channels": n.no_hidden,
            "num_blocks": n.no_blocks,
            "block_width_factors": list(n.block_width_factors),
        }
    torch.manual_seed(0)
    model = create_model(
        "flexnet_7",
        in_channels=meta.in_channels,
        out_channels=meta.num_classes,
        data_dim=meta.data_dim,
        conv_kwargs={"kernel_size": resolve_horizon(cfg.conv.horizon, meta)},
        **task,
    )
    assert str(model) == str(app)
    a, b = app.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_horizon_same_is_resolution_or_plus_one():
    cfg, dm, net = built("cifar10_flexnet7_srf")  # no conv.horizon: "same"
    assert resolve_horizon("same", dm.meta) == 33
    cfg, dm, net = built("crossres_cifar10_flexnet7_noreg")  # 16 px source
    assert resolve_horizon(cfg.conv.horizon, dm.meta) == 17
    assert tuple(net.stem.grid_size.tolist()) == (17, 17)
    cfg, dm, net = built("mnist_flexnet7")
    assert resolve_horizon("same", dm.meta) == 29 == cfg.conv.horizon


@pytest.fixture
def fast_trainer(monkeypatch):
    """No kernel plots and no progress bars in smoke runs (they dominate a 2-batch run)."""
    original = flexconv_main.trainer_settings

    def settings(*args, **kwargs):
        return replace(original(*args, **kwargs), plot_kernels=False, progress_bar=False)

    monkeypatch.setattr(flexconv_main, "trainer_settings", settings)


SMOKE = ["cifar10_flexnet7", "imagenet32_resnet32"]
SMOKE_SLOW = [n for n in COMMANDS if not is_crossres(n) and n not in SMOKE]


def _smoke(name: str, tmp_path, capsys) -> dict:
    cfg, dm, _ = built(name)
    summary = [2, dm.meta.in_channels, *dm.meta.input_shape[1:]]
    args = fake_args(name, "train.limit_batches=2", "train.epochs=1", f"summary={summary}")
    results = run(compose(args), run_dir=str(tmp_path))
    out = capsys.readouterr().out
    assert "Total parameters" in out and "Output shape" in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {"params", "val", "test", "epochs", "wall_time_s", "config"} <= set(saved)
    assert 0.0 <= results["test"]["acc"] <= 1.0
    return results


@pytest.mark.parametrize("name", SMOKE)
def test_paper_command_smoke_runs_on_fake_data(name, tmp_path, capsys, fast_trainer):
    _smoke(name, tmp_path, capsys)


@pytest.mark.parametrize("name", SMOKE_SLOW)
def test_other_paper_commands_smoke_run_on_fake_data(name, tmp_path, capsys, fast_trainer):
    _smoke(name, tmp_path, capsys)


@pytest.mark.parametrize("name", [n for n in COMMANDS if is_crossres(n)])
def test_crossres_commands_smoke_run_on_fake_data(name, tmp_path, fast_trainer):
    args = fake_args(
        name,
        "train.limit_batches=2",
        "train.epochs=1",
        "cross_res.finetune_epochs=1",
        "summary=[0]",
    )
    results = run_crossres(compose(args, crossres=True), run_dir=str(tmp_path))
    for key in (
        "source_acc",
        "target_acc_before_finetune",
        "change_before_finetune",
        "target_acc_after_finetune",
    ):
        assert results[key] is not None


def test_flextcn_on_sequences_smoke(tmp_path, fast_trainer):
    args = [
        "dataset=sMNIST",
        "device=cpu",
        "dataset_params.fake=true",
        "net.type=TCN",
        "net.no_hidden=8",
        "net.no_blocks=2",
        "net.norm=BatchNorm",
        "conv.type=FlexConv",
        "kernel.type=MAGNet",
        "kernel.no_hidden=8",
        "kernel.no_layers=2",
        "mask.type=gaussian",
        "mask.init_value=0.075",
        "train.batch_size=2",
        "train.epochs=1",
        "train.limit_batches=2",
        "train.lr=0.01",
        "train.weight_decay=1e-5",
        "summary=[2, 1, 784]",
    ]
    cfg = compose(args)
    dm = build_datamodule(cfg)
    net = build_network(cfg, dm.meta)
    assert type(net).__name__ == "FlexTCN" and net.blocks[0].conv1.causal
    assert int(net.blocks[0].conv1.grid_size[0]) == 785
    assert run(cfg, run_dir=str(tmp_path))["params"] == n_params(net)


def test_mask_params_train_at_a_tenth_of_the_lr():
    cfg, dm, net = built("cifar10_flexnet7")
    optim, schedule = optim_settings(cfg)
    opt = build_optimizer(net, optim)
    groups = {g["name"]: g for g in opt.param_groups}
    assert len(groups["mask"]["params"]) == 2 * 15  # mean and sigma of 15 FlexConvs
    assert groups["mask"]["lr"] == pytest.approx(0.01 * 0.1)
    assert groups["default"]["lr"] == pytest.approx(0.01)
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)
    assert schedule.name == "cosine" and schedule.warmup_epochs == 5 and schedule.eta_min == 1e-6


def test_weight_decay_is_the_norm_of_the_sampled_kernels():
    cfg, dm, net = built("cifar10_flexnet7_srf")  # train.weight_decay=1e-05
    terms = {name: (w, fn) for name, w, fn in loss_terms(cfg)}
    assert terms["weight_decay"][0] == pytest.approx(1e-5)
    net.train()
    net(torch.randn(2, 3, 32, 32))
    value = kernel_l2_norm(net)
    srf = [m for m in net.modules() if type(m).__name__ == "SRFConv"]
    assert len(srf) == 15 and value.requires_grad
    # exactly the sum of the 15 sampled SRF kernels' norms, computed here from each layer's
    # basis and coefficients (not the kernel the layer kept)
    with torch.no_grad():
        want = sum(torch.einsum("oin,n...->oi...", m.weight, m.basis()).norm() for m in srf)
        shortcuts = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        assert [m.kernel_size for m in shortcuts] == [(1, 1), (1, 1)]
        for m in shortcuts:  # 1x1 shortcuts are not kernels: changing them changes nothing
            m.weight.mul_(3.0)
    assert value.item() == pytest.approx(want.item(), rel=1e-5)
    assert kernel_l2_norm(net).item() == pytest.approx(value.item(), rel=1e-6)
    cfg, _, _ = built("crossres_cifar10_flexnet7_reg_gabor_mask")
    names = [name for name, _, _ in loss_terms(cfg)]
    assert names == ["aliasing"] and loss_terms(cfg)[0][1] == pytest.approx(0.1)


def test_seed_minus_one_draws_and_records_a_seed(tmp_path, fast_trainer):
    cfg = compose(
        ["experiment=digits", "device=cpu", "seed=-1", "train.epochs=1", "train.limit_batches=1"]
    )
    results = run(cfg, run_dir=str(tmp_path))
    assert results["config"]["seed"] >= 0


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arg, hint",
    [
        ("net.no_hiden=3", "net.no_hidden"),
        ("kernel.regularize_param.factor=0.1", "kernel.regularize_params.factor"),
        ("train.mask_param_lr_factor=0.1", "train.mask_params_lr_factor"),
        ("cross_res.source_re=16", "cross_res.source_res"),
    ],
)
def test_misspelt_key_names_the_closest(arg, hint):
    with pytest.raises(ConfigError, match=f"Did you mean '{hint}'"):
        prepare_argv([arg])


BASE = COMMANDS["cifar10_flexnet7"]["args"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["dataset=CIFAR1O"], "Did you mean 'CIFAR10'"),
        (["net.type=ResNett"], "Did you mean 'ResNet'"),
        (["net.type=TCN"], "FlexTCN"),
        (["kernel.regularize=True", "conv.type=Conv"], "needs continuous kernels"),
        (["kernel.regularize=True", "conv.type=CKConv"], r"gabor\+mask needs a FlexConv mask"),
        (
            ["kernel.regularize=True", "kernel.type=SIREN", "kernel.omega_0=30"],
            "Gabor-based kernel",
        ),
        (["conv.type=Conv", "conv.horizon=4"], "odd conv.horizon"),
        (["mask.init_value=0"], "mask.init_value > 0"),
        (["dataset_params.mfcc=True"], "mfcc"),
        (["kernel.weight_norm=True"], "not supported"),
        (["train.augment=reznet"], "train.augment"),
        (["train.scheduler=cosin"], "Did you mean 'cosine'"),
        (["cross_res.source_res=16"], "run_crossres.py only"),
        (["summary=[64, 3, 32]"], "summary"),
        (["kernel.type=MAGNett"], "MAGNet"),
    ],
)
def test_invalid_combinations_fail_before_any_work(extra, message):
    cfg = compose([*BASE, "device=cpu", *extra])
    with pytest.raises(Exception, match=message):
        validate(cfg)
        validate_with_meta(cfg, build_datamodule(cfg).meta)


def test_crossres_needs_resolutions_and_images():
    with pytest.raises(ConfigError, match="cross_res.source_res must be > 0"):
        validate(compose([*BASE, "device=cpu"], crossres=True), crossres=True)
    with pytest.raises(ConfigError, match="Imagenet-k exists only"):
        args = COMMANDS["crossres_imagenet_k_resnet32"]["args"]
        validate(
            compose([*args, "device=cpu", "cross_res.target_res=48"], crossres=True), crossres=True
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(Exception, match="no CUDA GPU is available"):
        validate(compose(BASE))


def test_command_line_reports_config_errors_cleanly():
    proc = subprocess.run(
        [sys.executable, "run_experiment.py", "net.no_hiden=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Did you mean 'net.no_hidden'" in proc.stderr and "Traceback" not in proc.stderr
