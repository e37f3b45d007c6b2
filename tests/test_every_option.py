"""Every leaf of the CCNN configuration schema does something or is refused.

For each key of ``CCNNConfig`` the test sets another valid value (in a context where the key
applies, e.g. a UEA set for ``dataset.params.pad_mode``) and builds the run exactly as
``main.py`` does (:func:`ccnn.apps.ccnn_main.plan`: validated config, data module, network with
pretrained weights, optimiser/schedule settings, trainer settings, what the run will do). The
key passes if that plan differs from the plan without it, or if the run is refused at start with
an option error. Keys accepted only for compatibility must warn; keys that mean nothing here
must be refused. A key that can do neither is a silent no-op: the test fails.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import option_walk
from ccnn.apps import ccnn_config
from ccnn.apps.ccnn_main import compose, plan
from ccnn.apps.ccnn_schema import CCNNConfig
from ccnn.apps.common import schema_keys

UEA = ["experiment=uea", "dataset.params.uea_name=ItalyPowerDemand", "train.steps=2"]
FAKE = ["dataset.fake=true", "device=cpu"]
MNIST = [*FAKE, "experiment=smnist_ccnn_4_140"]
FILES = ["device=cpu", "dataset.data_dir={data}"]  # small files in the real formats
NO_MASK = [
    "conv.type=SeparableCKConv",
    "mask.type=''",
    "mask.init_value=-1",
    "mask.threshold=-1",
    "mask.dynamic_cropping=false",
]
CIFAR = [*FAKE, "experiment=scifar10_ccnn_4_140"]
SPEECH = [*FAKE, "experiment=raw_ccnn_4_140"]
MODELNET = [*FAKE, "experiment=modelnet40_ccnn_4_16"]
PATHFINDER = [*FAKE, "experiment=pathfinder_ccnn_4_140"]
STEPS = ["train.epochs=-1", "train.steps=50"]
PLATEAU = ["scheduler.name=plateau", "scheduler.factor=0.5", "scheduler.patience=3"]
NO_WARMUP = ["scheduler.warmup_epochs=-1"]

# key -> (another valid value, the context in which the key applies)
CASES: dict[str, tuple[Any, list[str]]] = {
    "device": ("cuda" if not torch.cuda.is_available() else "cpu", []),
    "no_workers": (1, []),
    "seed": (1, []),
    "net.type": ("ResNet_image", []),  # 1D digits: the 2D form is refused
    "net.no_stages": (2, []),
    "net.data_dim": (2, []),
    "net.dropout_type": ("Dropout", []),
    "net.norm": ("LayerNorm", []),
    "net.nonlinearity": ("ReLU", []),
    "net.block_width_factors": ("[1.0,1,2.0,1]", []),
    "net.block.type": ("default", []),
    "net.downsampling": ("[0]", []),
    "net.downsampling_size": (3, ["net.downsampling=[0]"]),
    "net.readout": ("last", []),
    "net.embedding_dim": (8, []),
    "net.observation_dropout": (0.2, []),
    "kernel.type": ("SIREN", []),
    "kernel.omega_0": (50.0, []),
    "kernel.omega_0_per_length": (0.5, []),
    "kernel.input_scale": (3.0, []),
    "kernel.size": ("full", []),
    "kernel.norm": ("BatchNorm", []),
    "kernel.nonlinearity": ("ReLU", []),
    "kernel.init_spatial_value": (0.5, []),
    "kernel.num_edges": (5, []),
    "kernel.bottleneck_factor": (2, []),
    "mask.type": ("gaussian", NO_MASK),
    "mask.init_value": (0.2, []),
    "mask.init_steps": (6.0, UEA),
    "mask.threshold": (0.2, []),
    "conv.type": ("FlexConv", []),
    "conv.use_fft": ("false", []),
    "conv.padding": ("valid", []),
    "conv.stride": (2, []),
    "conv.stem_type": ("FlexConv", []),
    "dataset.name": ("sMNIST", MNIST),
    "dataset.data_type": ("default", []),
    "dataset.params.permuted": (True, [*FILES, "experiment=smnist_ccnn_4_140"]),
    "dataset.params.noise_padded": (True, CIFAR),
    "dataset.params.grayscale": (True, CIFAR),
    "dataset.params.mfcc": (True, SPEECH),
    "dataset.params.drop_rate": (0.3, UEA),
    "dataset.params.num_nodes": (256, [*MODELNET, "dataset.params.modelnet.num_nodes=-1"]),
    "dataset.params.resolution": (64, PATHFINDER),
    "dataset.params.modelnet.num_nodes": (256, MODELNET),
    "dataset.params.modelnet.voxelize": (True, MODELNET),
    "dataset.params.modelnet.modelnet_name": (
        "10",
        MODELNET,
    ),
    "dataset.params.uea_name": ("GunPoint", UEA),
    "dataset.params.pad_mode": ("mask", UEA + ["dataset.params.drop_rate=0.3"]),
    "dataset.params.uea_split": ("random", UEA),
    "dataset.params.normalize": ("dataset", UEA),
    "dataset.params.val_fraction": (0.2, UEA),
    "dataset.params.lra_val": (
        "test",
        [*FILES, "experiment=listops_ccnn_4_140", "dataset.name=IMDB"],
    ),
    "dataset.params.image_size": (16, CIFAR),
    "dataset.params.metric": ("acc", []),
    "dataset.data_dir": ("/tmp/ccnn-elsewhere", []),
    "train.epochs": (3, []),
    "train.batch_size": (32, []),
    "train.grad_clip": (1.0, []),
    "train.max_epochs_no_improvement": (5, []),
    "train.track_grad_norm": (2, []),
    "train.accumulate_grad_steps": (2, []),
    "train.num_nodes": (2, []),
    "train.avail_gpus": (2, []),
    "train.limit_batches": (3, []),
    "train.resume": ("/nonexistent/last.ckpt", []),
    "train.steps": (80, STEPS),
    "train.position_budget": (1e4, STEPS),
    "train.nonfinite_patience": (2, []),
    "train.ema_decay": (0.9, []),
    "optimizer.name": ("SGD", []),
    "optimizer.lr": (0.02, []),
    "optimizer.mask_lr_ratio": (0.5, []),
    "optimizer.momentum": (0.9, ["optimizer.name=SGD"]),
    "optimizer.nesterov": (True, ["optimizer.name=SGD", "optimizer.momentum=0.9"]),
    "optimizer.weight_decay": (1e-4, []),
    "optimizer.weight_decay_type": ("decoupled", ["optimizer.weight_decay=1e-4"]),
    "scheduler.name": ("plateau", [*NO_WARMUP, "scheduler.factor=0.5", "scheduler.patience=3"]),
    "scheduler.decay_steps": (10, ["scheduler.name=multistep", "scheduler.factor=0.5"]),
    "scheduler.factor": (0.2, [*NO_WARMUP, *PLATEAU]),
    "scheduler.patience": (5, [*NO_WARMUP, *PLATEAU]),
    "scheduler.warmup_epochs": (3.0, []),
    "scheduler.warmup_steps": (10, []),
    "scheduler.mode": ("min", [*NO_WARMUP, *PLATEAU]),
    "test.batch_size_multiplier": (2, []),
    "wandb.project": ("other", ["debug=false"]),
    "wandb.entity": ("other", ["debug=false"]),
    "pretrained.alias": ("last", []),
    "pretrained.filename": ("run.ckpt", []),
}
LABELS = {"comment": "a free-text note, stored with the run's config and results"}
"""Keys that label a run and are not meant to change it."""
FILES_ONLY = {
    "dataset.params.modelnet.resampling_factor": (
        "test_modelnet.py::test_zip_download_extract_splits_and_cache"
    ),
}
"""Keys whose effect needs the dataset's real files (here: meshes sampled again) — held by the
named test, which asserts that effect on small files in the real format."""


def fingerprint(args: list[str], tmp_path) -> dict[str, Any]:
    """What a run built from ``args`` would be, in comparable values."""
    return option_walk.fingerprint(plan(compose(args), str(tmp_path)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from data_fixtures import write_mnist
    from sequence_fixtures import write_imdb

    root = tmp_path_factory.mktemp("data")
    write_mnist(root / "MNIST" / "raw")
    write_imdb(root, per_class=10)
    return root


_BEFORE: dict[tuple[str, ...], dict[str, Any]] = {}
"""Fingerprints of the contexts, computed once."""


def _leaves() -> list[str]:
    return [k for k, leaf in schema_keys(CCNNConfig).items() if leaf]


def test_cases_name_real_keys():
    assert set(CASES) <= set(_leaves()) and set(LABELS) <= set(_leaves())


def test_keys_held_elsewhere_have_their_test():
    import importlib

    for key, where in FILES_ONLY.items():
        module, name = where.split("::")
        assert key in _leaves() and hasattr(importlib.import_module(module[:-3]), name)


@pytest.mark.parametrize("key", [k for k in _leaves() if k not in {**LABELS, **FILES_ONLY}])
def test_every_key_changes_the_run_or_is_refused(key, tmp_path, data_dir, monkeypatch):
    from ccnn.data import vision

    # fixture MNIST files are not the released ones: no md5 for files already present
    monkeypatch.setattr(vision.MNIST, "resources", dict.fromkeys(vision.MNIST.resources))
    value, context = CASES.get(key, (None, []))
    option_walk.walk_key(
        key,
        (value, [arg.format(data=data_dir) for arg in context]),
        compose,
        lambda args, name: fingerprint(args, tmp_path / name),
        _BEFORE,
        ccnn_config,
    )


# -- the paper models: the app's network is the registry's ------------------------------------


def _paper_commands(point_clouds: bool = False) -> list[str]:
    from pathlib import Path

    import ccnn.configs.ccnn as configs

    folder = Path(configs.__file__).parent / "experiment"
    names = (p.stem for p in folder.glob("*_ccnn_[46]_*.yaml"))
    return sorted(n for n in names if n.startswith("modelnet") == point_clouds)


@pytest.mark.parametrize("experiment", _paper_commands())
def test_app_networks_are_the_registry_models(experiment):
    """The app builds through the registry (``create_model("ccnn")``); each CCNN paper command
    builds ``create_model("ccnn_<blocks>_<width>")`` given only the
    per-task settings of the command (ω0, mask width, kernel size, causality, dropout, width
    factors, pooling; the kernel width where a command departs from the paper's): same modules,
    same initial weights."""
    from ccnn import create_model

    cfg = compose([f"experiment={experiment}", "dataset.fake=true", "device=cpu"])
    meta = ccnn_config.build_datamodule(cfg).meta
    torch.manual_seed(0)
    app = ccnn_config.build_network(cfg, meta)
    kw = ccnn_config.conv_kwargs(cfg, meta)
    task = {
        "omega_0": kw["kernel_kwargs"]["omega_0"],
        "causal": kw["causal"],
        "kernel_size": kw["kernel_size"],
        "mask_init_value": kw["mask_kwargs"]["init_value"],
        "use_fft": kw["use_fft"],
        "dropout": cfg.net.dropout,
        "dropout_in": cfg.net.dropout_in,
        "dropout_type": cfg.net.dropout_type,
        "block_width_factors": list(cfg.net.block_width_factors),
        "downsampling": list(cfg.net.downsampling),
        "downsampling_size": cfg.net.downsampling_size,
    }
    if cfg.kernel.no_hidden != (32 if cfg.net.no_blocks == 4 else 64):
        task["kernel_hidden"] = cfg.kernel.no_hidden
    variant = f"ccnn_{cfg.net.no_blocks}_{cfg.net.no_hidden}"
    torch.manual_seed(0)
    model = create_model(
        variant,
        in_channels=meta.in_channels,
        out_channels=app.out_channels,
        data_dim=meta.data_dim,
        **task,
    )
    assert str(model) == str(app)
    a, b = app.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.parametrize("experiment", _paper_commands(point_clouds=True))
def test_point_cloud_commands_build_the_registry_models(experiment):
    """Each ModelNet paper command builds ``create_model("point_ccnn_<blocks>_<width>")`` given
    only the command's per-task settings (width of the small nets, kernel width and ω0,
    neighbours): same modules, same initial weights."""
    from ccnn import create_model

    cfg = compose([f"experiment={experiment}", "dataset.fake=true", "device=cpu"])
    meta = ccnn_config.build_datamodule(cfg).meta
    torch.manual_seed(0)
    app = ccnn_config.build_network(cfg, meta)
    six = cfg.net.no_blocks == 6
    variant = "point_ccnn_6_380" if six else "point_ccnn_4_140"
    published = {  # the variant's own defaults; only what a command changes is passed
        "conv_type": "SeparablePointFlexConvDist" if six else "SeparablePointFlexConv",
        "hidden_channels": 380 if six else 140,
        "kernel_hidden": 64 if six else 32,
        "num_neighbours": 64 if six else 256,
        "omega_0": 500.0,
    }
    command = {
        "conv_type": cfg.conv.type,  # Figure 8's CCNN-6,380: without the distance input
        "hidden_channels": cfg.net.no_hidden,  # the small nets of Figure 8: 16, 32, 48
        "kernel_hidden": cfg.kernel.no_hidden,
        "num_neighbours": cfg.kernel.num_edges,
        "omega_0": cfg.kernel.omega_0,
    }
    task = {k: v for k, v in command.items() if v != published[k]}
    torch.manual_seed(0)
    model = create_model(
        variant, in_channels=meta.in_channels, out_channels=meta.num_classes, **task
    )
    assert str(model) == str(app)
    a, b = app.state_dict(), model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
