"""The CCNN configuration (``main.py``): its checks and the mapping from config names to library
objects. The schema is :mod:`ccnn.apps.ccnn_schema`.

Every key and default of the published ``cfg/config.yaml`` keeps its published meaning.
Our additions are new keys: ``dataset.fake``, ``dataset.params.uea_name``, ``train.limit_batches``,
``train.resume``, ``train.nonfinite_patience``, ``optimizer.weight_decay_type``, ``net.readout``,
``net.embedding_dim``, ``net.gap_weights``, ``net.observation_dropout``.
One default differs: ``device: auto`` (cuda when available, else cpu) instead of ``cuda``, so the
paper commands run unchanged on CPU-only machines; ``device=cuda`` without a GPU is an error.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ccnn.apps.ccnn_schema import (
    CCNNConfig,
    DatasetParams,
    KernelConfig,
    MaskConfig,
)
from ccnn.apps.common import (
    ConfigError,
    check_dataset_params,
    check_unused_keys,
    fft_choice,
    require_defaults,
    select_options,
)
from ccnn.data.base import DATASETS, DataOptions, DatasetMeta
from ccnn.data.datamodule import CCNNDataModule
from ccnn.models import create_model
from ccnn.nn.conv import CONVS, continuous_convs
from ccnn.nn.kernels import KERNELS, kernel_options
from ccnn.nn.masks import MASKS
from ccnn.nn.pointconv import POINT_CONVS as POINT_CONV_TYPES
from ccnn.train.optim import OptimSettings, ScheduleSettings
from ccnn.train.runner import TrainerSettings

NET_TYPES = ("ResNet", "ResNet_sequence", "ResNet_image")
POINT_CONVS = tuple(POINT_CONV_TYPES.names())


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def data_options(cfg: DictConfig) -> DataOptions:
    params = OmegaConf.to_container(cfg.dataset.params, resolve=True)
    family = DATASETS.get(cfg.dataset.name)
    pathfinder = family is DATASETS.get("PathFinder")
    _require(
        not (cfg.dataset.data_dir and getattr(family, "embedded", False)),
        f"dataset.data_dir={cfg.dataset.data_dir} is not used by dataset {cfg.dataset.name} "
        "(its data ships with the installed packages); remove it",
    )
    check_dataset_params(
        "dataset.params",
        cfg.dataset.name,
        family,
        params,
        OmegaConf.to_container(OmegaConf.structured(DatasetParams)),
        {"image_size": None} if pathfinder else {"image_size": "resolution", "resolution": None},
    )
    # `resolution` is PathFinder's image size in the published config; other image datasets
    # take a resize through our key `image_size` (their native size by default).
    image_size = params.pop("image_size", -1)
    if not pathfinder:
        params.pop("resolution", None)
        if image_size and image_size > 0:
            params["resolution"] = image_size
    return DataOptions(
        name=cfg.dataset.name,
        data_type=cfg.dataset.data_type,
        data_dir=cfg.dataset.data_dir or None,
        augment=cfg.dataset.augment,
        params=params,
        fake=cfg.dataset.fake,
    )


UNUSED_KEYS = {
    "conv.cache": "evaluation reuses the sampled kernels by itself",
    "net.no_stages": "the CCNN has no stages",
    "net.data_dim": "the data dimension comes from the dataset",
    "dataset.params.memory_size": "no implemented dataset uses it",
    "dataset.params.target_idx": "no implemented dataset uses it",
    "dataset.params.metric": "every task here is classification, scored by accuracy",
    "dataset.params.seq_length": "no implemented dataset uses it",
    "dataset.params.modelnet.voxel_scale": "ModelNet is read as point clouds, not voxels",
}
"""Published keys that do nothing here: setting one is an error."""
COMPATIBILITY_KEYS = {
    "mask.temperature": "Gaussian masks have no temperature (it shaped the published sigmoid mask)",
}
"""Published keys that do nothing here but appear in published commands: a warning."""


def validate(cfg: DictConfig) -> None:
    """Published start-up checks plus ours; every failure names the key and the fix."""
    check_unused_keys(cfg, CCNNConfig, UNUSED_KEYS, COMPATIBILITY_KEYS)
    _require(
        bool(cfg.dataset.name),
        "dataset.name is not set; e.g. dataset.name=MNIST (or use experiment=digits)",
    )
    DATASETS.get(cfg.dataset.name)
    _require(
        cfg.net.type in NET_TYPES,
        f"Unknown net.type '{cfg.net.type}'; supported: {list(NET_TYPES)}",
    )
    _require(cfg.net.no_hidden > 0, f"net.no_hidden must be > 0, got {cfg.net.no_hidden}")
    _require(cfg.net.no_blocks >= 0, f"net.no_blocks must be >= 0, got {cfg.net.no_blocks}")
    _require(cfg.train.batch_size > 0, f"train.batch_size must be > 0, got {cfg.train.batch_size}")
    fft_choice(cfg.conv.use_fft)  # true, false or auto
    if not cfg.pretrained.load:
        require_defaults(
            cfg,
            CCNNConfig,
            ("pretrained.filename", "pretrained.alias"),
            "is used only with pretrained.load=true; add pretrained.load=true (or remove it)",
        )
    _require(
        0.0 <= cfg.train.ema_decay < 1.0,
        f"train.ema_decay must be in [0, 1) (0: off; e.g. 0.999), got {cfg.train.ema_decay}",
    )
    _require(
        cfg.train.nonfinite_patience >= -1,
        "train.nonfinite_patience must be >= 0 (bad steps skipped before stopping) or -1 "
        f"(never stop), got {cfg.train.nonfinite_patience}",
    )
    _require(
        cfg.train.epochs > 0 or cfg.train.steps > 0,
        f"train.epochs must be > 0 (or set train.steps), got {cfg.train.epochs}",
    )
    _require(
        not (cfg.train.epochs > 0 and cfg.train.steps > 0),
        f"set train.epochs or train.steps, not both (got {cfg.train.epochs} and "
        f"{cfg.train.steps}); to train by epochs with a preset that counts steps, add "
        "train.steps=-1",
    )
    _require(
        cfg.train.position_budget <= 0 or cfg.train.steps > 0,
        "train.position_budget caps train.steps; set train.steps too (or remove the budget)",
    )
    _require(
        cfg.train.batch_size % cfg.train.accumulate_grad_steps == 0,
        f"train.batch_size={cfg.train.batch_size} must be divisible by "
        f"train.accumulate_grad_steps={cfg.train.accumulate_grad_steps}",
    )
    _require(
        cfg.conv.padding == "same",
        f"conv.padding={cfg.conv.padding!r} is not supported; convolutions keep the input size "
        "(conv.padding=same)",
    )
    _require(cfg.conv.stride == 1, f"conv.stride={cfg.conv.stride} is not supported; use 1")
    conv_type = cfg.conv.type
    if conv_type not in POINT_CONVS:
        CONVS.get(conv_type)
    if cfg.conv.stem_type:
        _require(
            conv_type not in POINT_CONVS and cfg.conv.stem_type not in POINT_CONVS,
            "conv.stem_type is not supported for point-cloud convolutions; remove it",
        )
        CONVS.get(cfg.conv.stem_type)
        discrete = ("Conv", "SeparableConv")
        _require(
            (conv_type in discrete) == (cfg.conv.stem_type in discrete),
            f"conv.stem_type={cfg.conv.stem_type} and conv.type={conv_type} must both be "
            "continuous (CKConv, FlexConv, ...) or both discrete (Conv, SeparableConv)",
        )
    if (
        conv_type in ("CKConv", "FlexConv", "SeparableCKConv", "SeparableFlexConv")
        or conv_type in POINT_CONVS
    ):
        KERNELS.get(cfg.kernel.type)
    if cfg.mask.type:
        MASKS.get(cfg.mask.type)
    _require(
        not (cfg.mask.init_steps > 0 and cfg.mask.init_value > 0),
        "set either mask.init_value or mask.init_steps, not both "
        f"(got {cfg.mask.init_value} and {cfg.mask.init_steps})",
    )
    _require(
        cfg.mask.init_steps <= 0 or cfg.conv.type not in POINT_CONVS,
        "mask.init_steps needs sequence or image inputs; point convolutions take mask.init_value",
    )
    _require(
        not (cfg.kernel.omega_0_per_length > 0 and cfg.kernel.omega_0 > 0),
        "set either kernel.omega_0 or kernel.omega_0_per_length, not both "
        f"(got {cfg.kernel.omega_0} and {cfg.kernel.omega_0_per_length})",
    )
    if cfg.scheduler.name == "plateau":
        _require(
            cfg.scheduler.warmup_epochs <= 0 and cfg.scheduler.warmup_steps <= 0,
            "scheduler.name=plateau cannot be combined with warm-up; "
            "set scheduler.warmup_epochs=-1 (and scheduler.warmup_steps=-1)",
        )
    if cfg.optimizer.weight_decay_type not in ("published", "decoupled"):
        raise ConfigError(
            f"Unknown optimizer.weight_decay_type '{cfg.optimizer.weight_decay_type}'; "
            "supported: ['published', 'decoupled']"
        )


NET_TYPE_DIMS = {"ResNet_sequence": 1, "ResNet_image": 2}
"""The published per-dimension names of the one network: checked against the data."""


def validate_with_meta(cfg: DictConfig, meta: DatasetMeta) -> None:
    """Checks that need the dataset's dimensionality."""
    dims = NET_TYPE_DIMS.get(cfg.net.type)
    if dims is not None and meta.data_type != "pointcloud":
        _require(
            meta.data_dim == dims,
            f"net.type={cfg.net.type} is for {dims}D data, but dataset {cfg.dataset.name} with "
            f"data_type={cfg.dataset.data_type} is {meta.data_dim}D; use net.type=ResNet",
        )
    if cfg.conv.causal:
        _require(
            meta.data_dim == 1,
            f"conv.causal=True is only valid for 1D data, but dataset {cfg.dataset.name} with "
            f"data_type={cfg.dataset.data_type} is {meta.data_dim}D; set conv.causal=False",
        )
    if meta.data_dim > 1 and cfg.conv.type in ("FlexConv", "SeparableFlexConv"):
        _require(
            cfg.mask.type == "gaussian",
            f"{cfg.conv.type} on {meta.data_dim}D data needs mask.type=gaussian, "
            f"got '{cfg.mask.type}'",
        )


def build_datamodule(cfg: DictConfig) -> CCNNDataModule:
    return CCNNDataModule(
        data_options(cfg),
        batch_size=cfg.train.batch_size // cfg.train.accumulate_grad_steps,
        test_batch_size=cfg.train.batch_size * max(1, cfg.test.batch_size_multiplier),
        num_workers=cfg.no_workers,
        pin_memory=cfg.device != "cpu" and torch.cuda.is_available(),
        drop_last=cfg.train.drop_last,
        seed=cfg.seed,
    )


def kernel_kwargs(cfg: DictConfig, meta: DatasetMeta | None = None) -> dict[str, Any]:
    """Map ``kernel.*`` to kernel-network keyword arguments.

    ``kernel.omega_0_per_length`` (ours) sets ``omega_0`` to that factor times the longest
    input extent, so the kernels' initial frequencies are the same relative to the sampling
    grid for series of any length.
    """
    k = cfg.kernel
    default = KernelConfig()
    omega_0 = k.omega_0
    if k.omega_0_per_length > 0:
        if meta is None or meta.data_type == "pointcloud":
            raise ConfigError(
                "kernel.omega_0_per_length needs sequence or image inputs (a grid length); "
                "set kernel.omega_0 instead"
            )
        omega_0 = k.omega_0_per_length * max(meta.input_shape[1:])
    mlp_activation = k.nonlinearity if k.nonlinearity != "Identity" else "ReLU"
    gabor = k.type in ("MAGNet", "Gabor")
    # MAGNet/Gabor always get omega_0 (the layer says so when it is 0); others only when set
    omega_0_set = gabor or k.omega_0 != default.omega_0 or k.omega_0_per_length > 0
    wanted: dict[str, tuple[str | None, Any, bool]] = {
        "hidden_channels": ("kernel.no_hidden", k.no_hidden, True),
        "num_layers": ("kernel.no_layers", k.no_layers, True),
        "omega_0": ("kernel.omega_0", omega_0, omega_0_set),
        "bias": ("kernel.bias", k.bias, k.bias != default.bias),
        "activation": (
            "kernel.nonlinearity",
            mlp_activation,
            k.nonlinearity != default.nonlinearity,
        ),
        "norm": ("kernel.norm", "" if k.norm == "Identity" else k.norm, k.norm != default.norm),
    }
    if k.input_scale > 0:
        wanted["input_scale"] = ("kernel.input_scale", k.input_scale, True)
    if k.init_spatial_value != default.init_spatial_value:
        wanted["init_spatial_value"] = ("kernel.init_spatial_value", k.init_spatial_value, True)
    accepted = set(kernel_options(k.type))
    if gabor:
        # the CCNN app initialises Gabor nets the CCNN way: frequencies from omega_0
        accepted.discard("input_scale")
        wanted["init"] = (None, "ccnn", False)
    return select_options("kernel.type", k.type, accepted, wanted)


def conv_kwargs(cfg: DictConfig, meta: DatasetMeta) -> dict[str, Any]:
    """Map ``conv.*``, ``kernel.*`` and ``mask.*`` to conv-layer keyword arguments."""
    k, m, c = cfg.kernel, cfg.mask, cfg.conv
    size: Any = k.size
    if isinstance(size, str) and size.lstrip("-").isdigit():
        size = int(size)
    kwargs: dict[str, Any] = {
        "causal": c.causal,
        "use_fft": fft_choice(c.use_fft),
        "bias": c.bias,
    }
    if c.type not in ("FlexConv", "SeparableFlexConv"):
        require_defaults(
            cfg,
            CCNNConfig,
            [f"mask.{f.name}" for f in dataclasses.fields(MaskConfig)],
            f"is not used: conv.type={c.type} has no mask; remove it",
        )
    if c.type in ("Conv", "SeparableConv"):
        kwargs["kernel_size"] = size if isinstance(size, int) else _same_discrete(meta)
        return kwargs
    kwargs.update(
        kernel_type=k.type,
        kernel_kwargs=kernel_kwargs(cfg, meta),
        kernel_size=size,
        chang_initialize=k.chang_initialize,
    )
    if c.type in ("FlexConv", "SeparableFlexConv"):
        kwargs["mask_type"] = m.type or "gaussian"
        kwargs["mask_kwargs"] = {
            "init_value": mask_init_value(cfg, meta),
            "threshold": m.threshold,
            "dynamic_cropping": m.dynamic_cropping,
            "learn_mean": m.learn_mean,
            "temperature": m.temperature,
        }
    return kwargs


def mask_init_value(cfg: DictConfig, meta: DatasetMeta) -> float:
    """``mask.init_value``, or σ from ``mask.init_steps`` (ours): that many grid steps of the
    longest input extent, ``init_steps * 2 / (L - 1)`` on the ``[-1, 1]`` kernel grid — masks
    that start equally local (in steps) for inputs of any length."""
    m = cfg.mask
    if m.init_steps <= 0:
        return m.init_value
    length = max(meta.input_shape[1:])
    return min(1.0, m.init_steps * 2.0 / max(1, length - 1))


def point_conv_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """Map ``kernel.*``, ``mask.*``, ``conv.*`` to point-convolution keyword arguments."""
    k, m = cfg.kernel, cfg.mask
    if k.num_edges is None or k.num_edges < 1:
        raise ConfigError(
            "point convolutions need kernel.num_edges >= 1 (neighbours per point), "
            f"got {k.num_edges}"
        )
    return {
        "num_neighbours": int(k.num_edges),
        "kernel_type": k.type,
        "kernel_kwargs": kernel_kwargs(cfg),
        "mask_type": m.type or "gaussian",
        "mask_kwargs": {"init_value": m.init_value, "learn_mean": m.learn_mean},
        "bias": cfg.conv.bias,
        "chang_initialize": k.chang_initialize,
        "bottleneck_factor": int(k.bottleneck_factor),
    }


def _same_discrete(meta: DatasetMeta) -> int:
    size = meta.input_shape[1]
    return size if size % 2 else size + 1


def build_network(cfg: DictConfig, meta: DatasetMeta):
    """The network for ``cfg`` on a dataset with ``meta`` (binary tasks get one logit)."""
    out_channels = 1 if meta.num_classes == 2 else meta.num_classes
    common = {
        "hidden_channels": cfg.net.no_hidden,
        "num_blocks": cfg.net.no_blocks,
        "conv_type": cfg.conv.type,
        "block_type": cfg.net.block.type,
        "prenorm": cfg.net.block.prenorm,
        "norm": cfg.net.norm,
        "nonlinearity": cfg.net.nonlinearity,
        "dropout": cfg.net.dropout,
        "dropout_in": cfg.net.dropout_in,
        "dropout_type": cfg.net.dropout_type,
        "block_width_factors": list(cfg.net.block_width_factors),
    }
    if meta.data_type == "pointcloud" or cfg.conv.type in POINT_CONVS:
        _require(
            meta.data_type == "pointcloud" and cfg.conv.type in POINT_CONVS,
            f"conv.type={cfg.conv.type} needs point-cloud data and point clouds need a point "
            f"convolution ({', '.join(POINT_CONVS)}); got dataset.data_type={meta.data_type}",
        )
        _require(
            cfg.net.observation_dropout == 0,
            "net.observation_dropout is for 1D series; point clouds have no observation mask",
        )
        return create_model(
            "point_ccnn",
            in_channels=meta.in_channels,
            out_channels=out_channels,
            data_dim=meta.data_dim,
            conv_kwargs=point_conv_kwargs(cfg),
            **common,
        )
    vocab = meta.extra.get("vocab_size") if cfg.net.embedding_dim > 0 else None
    if cfg.net.embedding_dim > 0 and not vocab:
        raise ConfigError(
            f"net.embedding_dim needs a token dataset; {cfg.dataset.name} has no vocabulary"
        )
    require_defaults(
        cfg,
        CCNNConfig,
        ("kernel.num_edges", "kernel.bottleneck_factor"),
        f"is a point-convolution option; conv.type={cfg.conv.type} does not use it (remove "
        f"it, or use one of {list(POINT_CONVS)})",
    )
    network = create_model(
        "ccnn",
        stem_conv_type=cfg.conv.stem_type or None,
        in_channels=cfg.net.embedding_dim if vocab else meta.in_channels,
        out_channels=out_channels,
        data_dim=meta.data_dim,
        conv_kwargs=conv_kwargs(cfg, meta),
        downsampling=list(cfg.net.downsampling),
        downsampling_size=cfg.net.downsampling_size,
        readout=cfg.net.readout,
        vocab_size=vocab,
        gap_weights=cfg.net.gap_weights,
        observation_dropout=cfg.net.observation_dropout,
        **common,
    )
    if meta.extra.get("timestamps"):
        # observations come with their times: size the "same" kernels for the full series,
        # not for the time span of the first batch
        for conv in continuous_convs(network):
            conv.init_time_grid(meta.input_shape[-1] - 1)
    return network


def optim_settings(cfg: DictConfig) -> tuple[OptimSettings, ScheduleSettings]:
    o, s = cfg.optimizer, cfg.scheduler
    decay = s.decay_steps
    decay_steps = (
        [int(d) for d in decay]
        if OmegaConf.is_list(decay) or isinstance(decay, list)
        else ([] if decay in (None, -1, "-1") else [int(decay)])
    )
    return (
        OptimSettings(
            name=o.name,
            lr=o.lr,
            mask_lr_ratio=o.mask_lr_ratio,
            weight_decay=o.weight_decay,
            weight_decay_type=o.weight_decay_type,
            momentum=o.momentum,
            nesterov=o.nesterov,
        ),
        ScheduleSettings(
            name=s.name,
            warmup_epochs=s.warmup_epochs,
            warmup_steps=s.warmup_steps,
            decay_steps=decay_steps,
            factor=s.factor,
            patience=s.patience,
            mode=s.mode,
        ),
    )


def training_epochs(cfg: DictConfig, num_train: int, length: int) -> int:
    """Epochs to train: ``train.epochs``, or — with ``train.steps`` — the whole number of epochs
    closest to that many optimiser steps, after capping the steps so that at most
    ``train.position_budget`` positions (series x length) are processed in training.

    Steps rather than epochs give tiny training sets (a few dozen series) enough updates, and
    the budget keeps long or large sets within a fixed compute cost.
    """
    t = cfg.train
    if t.steps <= 0:
        return int(t.epochs)
    batch = min(t.batch_size, max(1, num_train))
    if t.drop_last:
        per_epoch = max(1, num_train // batch)
    else:
        per_epoch = math.ceil(max(1, num_train) / batch)
    if t.limit_batches and t.limit_batches > 0:
        per_epoch = min(per_epoch, t.limit_batches)
    steps = int(t.steps)
    if t.position_budget > 0:
        steps = max(1, min(steps, int(t.position_budget // (batch * max(1, length)))))
    return max(1, round(steps / per_epoch))


def trainer_settings(cfg: DictConfig, run_dir: str, epochs: int | None = None) -> TrainerSettings:
    t = cfg.train
    return TrainerSettings(
        run_dir=run_dir,
        epochs=int(epochs if epochs is not None else t.epochs),
        device=cfg.device,
        distributed=t.distributed,
        devices=t.avail_gpus,
        num_nodes=max(1, t.num_nodes),
        mixed_precision=t.mixed_precision,
        grad_clip=t.grad_clip,
        accumulate_grad_steps=t.accumulate_grad_steps,
        patience=t.max_epochs_no_improvement,
        limit_batches=t.limit_batches,
        deterministic=cfg.deterministic,
        seed=cfg.seed,
        logger="csv" if cfg.debug else "wandb",
        wandb={"project": cfg.wandb.project, "entity": cfg.wandb.entity},
        plot_kernels_every_epoch=cfg.hooks_enabled,
        resume_from=t.resume,
        nonfinite_patience=t.nonfinite_patience,
        ema_decay=t.ema_decay,
    )
