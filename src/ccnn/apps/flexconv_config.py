"""The FlexConv configuration (``run_experiment.py``, ``run_crossres.py``): its checks and the
mapping from config names to library objects. The schema is :mod:`ccnn.apps.flexconv_schema`.

FlexConv: Romero, Bruintjes et al., "FlexConv: Continuous Kernel Convolutions with
Differentiable Kernel Sizes", arXiv:2110.08059.

Every key and default of the published FlexConv configuration keeps its published meaning
(SPEC §3.5). Our additions are new keys: ``dataset_params.fake``,
``train.limit_batches``. One default differs: ``device: auto`` (cuda when available, else cpu)
instead of ``cuda``; ``device=cuda`` without a GPU is an error.

Decisions (see docs/flexconv.md):

* FlexConv learns the mask mean AND width (``learn_mean=True``, 4 mask parameters per 2D
  layer); the published FlexConv had no Chang initialisation (``chang_initialize=False``);
  MAGNet/Gabor kernels use the FlexConv initialisation driven by ``kernel.input_scale``.
* ``conv.horizon="same"``: the data resolution if odd, +1 if even (33 on CIFAR-10).
* Sequences (``sMNIST``, ``sCIFAR10``, ``SpeechCommands``, ``CharTrajectories``) run causal
  convolutions in a FlexTCN (``net.type=ResNet`` or ``TCN``); images a FlexNet.
* ``train.weight_decay`` is FlexConv's: ``weight_decay * sum ||K||_2`` over the convolution
  kernels the network used in its last training forward, added to the loss.
* Options of the published schema that we do not implement raise an error when set to a
  non-default value (they never silently do nothing).
"""

from __future__ import annotations

import copy
import difflib
import os
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ccnn.apps.common import (
    ConfigError,
    check_dataset_params,
    check_unused_keys,
    fft_choice,
    require_defaults,
    select_options,
)
from ccnn.apps.flexconv_schema import FlexConvConfig, KernelConfig
from ccnn.data.base import DATASETS, DataOptions, DatasetMeta
from ccnn.data.datamodule import CCNNDataModule
from ccnn.data.resize import INTERPOLATIONS
from ccnn.nn import aliasing
from ccnn.nn.conv import CONVS, conv_types
from ccnn.nn.kernels import KERNELS, kernel_options
from ccnn.nn.masks import MASKS
from ccnn.train.losses import kernel_l2_norm, mask_l2_norm
from ccnn.train.optim import SCHEDULERS, OptimSettings, ScheduleSettings
from ccnn.train.runner import TrainerSettings

# ---------------------------------------------------------------------------------------------
# names

DATASETS_FLEXCONV: dict[str, tuple[str, str]] = {
    # FlexConv dataset name -> (shared dataset family, data_type)
    "CIFAR10": ("CIFAR10", "default"),
    "sCIFAR10": ("CIFAR10", "sequence"),
    "MNIST": ("MNIST", "default"),
    "sMNIST": ("MNIST", "sequence"),
    "STL10": ("STL10", "default"),
    "Imagenet32": ("Imagenet32", "default"),
    "Imagenet-k": ("Imagenet-k", "default"),
    "SpeechCommands": ("SpeechCommands", "default"),
    "CharTrajectories": ("CharTrajectories", "default"),
    "Digits": ("Digits", "default"),
}
SEQUENCE_ONLY_PARAMS = {"permuted": ("sMNIST", "sCIFAR10"), "noise_padded": ("sCIFAR10",)}
CIFAR_RESNETS = tuple(f"CIFARResNet{d}" for d in (20, 32, 44, 56, 110, 1202))
NET_TYPES = ("ResNet", "TCN", *CIFAR_RESNETS)
CONTINUOUS_CONVS = conv_types("continuous")
MASKED_CONVS = conv_types("masked")
DISCRETE_CONVS = conv_types("discrete")
AUGMENT_OFF = (None, "", "None", "none", "null", False)
AUGMENT_ON = ("resnet",)
COSINE_ETA_MIN = 1e-6
"""FlexConv's cosine schedule ends at this learning rate (per iteration)."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _one_of(value: Any, allowed: tuple, key: str) -> None:
    if value in allowed:
        return
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"Unknown {key}={value!r}.{hint} Supported: {[a for a in allowed if a]}")


def is_sequence_dataset(cfg: DictConfig) -> bool:
    family, data_type = DATASETS_FLEXCONV[cfg.dataset]
    return data_type == "sequence" or family in ("SpeechCommands", "CharTrajectories")


def uses_continuous_kernels(cfg: DictConfig) -> bool:
    return not cfg.net.type.startswith("CIFARResNet") and cfg.conv.type in CONTINUOUS_CONVS


def effective_conv_type(cfg: DictConfig) -> str:
    """``conv.type`` with ``mask.use=False`` turning a FlexConv into its unmasked CKConv."""
    if cfg.conv.type in MASKED_CONVS and not cfg.mask.use:
        return cfg.conv.type.replace("FlexConv", "CKConv")
    return cfg.conv.type


def augment_enabled(cfg: DictConfig) -> bool:
    value = cfg.train.augment
    if value in AUGMENT_ON:
        return True
    if value in AUGMENT_OFF:
        return False
    _one_of(value, ("None", *AUGMENT_ON), "train.augment")
    return False


# ---------------------------------------------------------------------------------------------
# checks


UNUSED_KEYS = {"conv.cache": "evaluation reuses the sampled kernels by itself"}
"""Published keys that do nothing here: setting one is an error."""
COMPATIBILITY_KEYS = {
    "mask.temperature": "Gaussian masks have no temperature (it shaped the published sigmoid mask)",
    "dataset_params.in_ram": "datasets are loaded (or memory-mapped) by their loader",
    "dataset_params.from_cache": "a valid preprocessed cache is always used",
}
"""Published keys that do nothing here but appear in published commands: a warning."""


def validate(cfg: DictConfig, crossres: bool = False) -> None:
    """Every check that needs no data; each failure names the key and the fix."""
    check_unused_keys(cfg, FlexConvConfig, UNUSED_KEYS, COMPATIBILITY_KEYS)
    from ccnn.train.runner import resolve_accelerator

    _require(
        bool(cfg.dataset),
        "dataset is not set; e.g. dataset=CIFAR10 (or experiment=digits for a small offline run)",
    )
    _one_of(cfg.dataset, tuple(DATASETS_FLEXCONV), "dataset")
    resolve_accelerator(cfg.device)
    _one_of(cfg.net.type, NET_TYPES, "net.type")
    t = cfg.train
    _require(
        not (crossres and t.resume),
        "train.resume is not supported for cross-resolution runs (two training phases); "
        "start the run again without train.resume",
    )
    _require(t.batch_size > 0, f"train.batch_size must be > 0, got {t.batch_size}")
    fft_choice(cfg.conv.use_fft)  # true, false or auto
    _require(
        0.0 <= cfg.train.ema_decay < 1.0,
        f"train.ema_decay must be in [0, 1) (0: off; e.g. 0.999), got {cfg.train.ema_decay}",
    )
    _require(
        t.omega_0_lr_factor == 1.0 or (cfg.kernel.type == "SIREN" and cfg.kernel.learn_omega_0),
        f"train.omega_0_lr_factor={t.omega_0_lr_factor} needs a learnable omega_0 "
        "(kernel.type=SIREN kernel.learn_omega_0=true); remove it",
    )
    _require(
        cfg.train.nonfinite_patience >= -1,
        "train.nonfinite_patience must be >= 0 (bad steps skipped before stopping) or -1 "
        f"(never stop), got {cfg.train.nonfinite_patience}",
    )
    if t.do:
        _require(t.epochs > 0, f"train.epochs must be > 0, got {t.epochs}")
        _require(t.lr > 0, f"train.lr must be > 0, got {t.lr}")
    _require(t.weight_decay >= 0, f"train.weight_decay must be >= 0, got {t.weight_decay}")
    _require(t.mask_l2_norm >= 0, f"train.mask_l2_norm must be >= 0, got {t.mask_l2_norm}")
    augment_enabled(cfg)
    _one_of(t.scheduler or "", SCHEDULERS, "train.scheduler")
    if t.scheduler == "plateau":
        _require(
            t.scheduler_params.warmup_epochs <= 0,
            "train.scheduler=plateau cannot be combined with warm-up; set "
            "train.scheduler_params.warmup_epochs=-1",
        )
    _validate_dataset_params(cfg)
    _validate_unsupported(cfg)
    _validate_summary(cfg)
    _validate_pretrained(cfg)
    if cfg.net.type.startswith("CIFARResNet"):
        _require(
            not is_sequence_dataset(cfg),
            f"net.type={cfg.net.type} is an image model; dataset={cfg.dataset} is a sequence task "
            "(use net.type=ResNet or TCN)",
        )
        _require(
            not cfg.kernel.regularize,
            f"kernel.regularize=True needs continuous kernels; net.type={cfg.net.type} has none",
        )
    else:
        _validate_flexnet(cfg)
    if crossres:
        _validate_crossres(cfg)
    else:
        _require(
            cfg.cross_res.source_res == 0 and cfg.cross_res.target_res == 0,
            "cross_res.source_res/target_res are used by run_crossres.py only; remove them or "
            "run `python run_crossres.py ...`",
        )


def _validate_flexnet(cfg: DictConfig) -> None:
    n, c, k, m = cfg.net, cfg.conv, cfg.kernel, cfg.mask
    _require(n.no_hidden > 0, f"net.no_hidden must be > 0 for net.type={n.type}, got {n.no_hidden}")
    _require(n.no_blocks > 0, f"net.no_blocks must be > 0 for net.type={n.type}, got {n.no_blocks}")
    _require(n.norm != "", "net.norm is not set; e.g. net.norm=BatchNorm")
    if n.type == "TCN":
        _require(
            is_sequence_dataset(cfg),
            f"net.type=TCN (FlexTCN) is for sequences; dataset={cfg.dataset} is an image task "
            "(use net.type=ResNet)",
        )
    _require(bool(c.type), "conv.type is not set; e.g. conv.type=FlexConv (or CKConv, Conv, SRF)")
    CONVS.get(c.type)
    _require(
        c.padding == "same",
        f"conv.padding={c.padding!r} is not supported; FlexNets use 'same' padding",
    )
    _require(
        c.stride == 1,
        f"conv.stride={c.stride} is not supported; FlexNets use no strides (set conv.stride=1)",
    )
    h = c.horizon
    if isinstance(h, str):
        _require(
            h == "same" or h.isdigit(),
            f"conv.horizon must be 'same' or a positive integer, got {h!r}",
        )
    else:
        _require(
            isinstance(h, int) and h > 0,
            f"conv.horizon must be 'same' or a positive integer, got {h!r}",
        )
    conv_type = effective_conv_type(cfg)
    if conv_type in DISCRETE_CONVS and not is_sequence_dataset(cfg):
        _require(
            isinstance(h, str) or h % 2 == 1,
            f"conv.type={c.type} on images needs an odd conv.horizon (a centred kernel), got {h}; "
            f"use {h + 1 if isinstance(h, int) else 'same'}",
        )
    if conv_type in CONTINUOUS_CONVS:
        _require(
            bool(k.type), f"kernel.type is not set for conv.type={c.type}; e.g. kernel.type=MAGNet"
        )
        KERNELS.get(k.type)
        _require(k.no_hidden > 0, f"kernel.no_hidden must be > 0, got {k.no_hidden}")
        _require(k.no_layers > 0, f"kernel.no_layers must be > 0, got {k.no_layers}")
        if k.type == "SIREN":
            _require(k.omega_0 > 0, f"kernel.type=SIREN needs kernel.omega_0 > 0, got {k.omega_0}")
        if k.type in ("MAGNet", "Gabor", "Fourier"):
            _require(
                k.input_scale > 0,
                f"kernel.type={k.type} needs kernel.input_scale > 0, got {k.input_scale}",
            )
    if conv_type in MASKED_CONVS:
        require_defaults(
            cfg,
            FlexConvConfig,
            ("kernel.init_spatial_value",),
            f"sets the initial extent of unmasked (CKConv) kernels; conv.type={c.type} starts "
            "from its mask (mask.init_value); remove it",
        )
        MASKS.get(m.type or "gaussian")
        _require(
            m.init_value > 0,
            f"conv.type={c.type} needs mask.init_value > 0 (the initial mask width), "
            f"got {m.init_value}",
        )
        if m.dynamic_cropping:
            _require(0 < m.threshold < 1, f"mask.threshold must be in (0, 1), got {m.threshold}")
    if k.regularize:
        rp = k.regularize_params
        _require(
            conv_type in CONTINUOUS_CONVS,
            f"kernel.regularize=True needs continuous kernels (conv.type=FlexConv or CKConv), got "
            f"conv.type={c.type}",
        )
        _require(
            k.type in aliasing.GABOR_KERNELS,
            "kernel.regularize=True needs a Gabor-based kernel "
            f"(kernel.type in {list(aliasing.GABOR_KERNELS)}), "
            f"got {k.type}; the maximum frequency of other kernel networks is not analytic",
        )
        _one_of(rp.target, aliasing.TARGETS, "kernel.regularize_params.target")
        _one_of(rp.method, aliasing.METHODS, "kernel.regularize_params.method")
        _one_of(rp.fn, aliasing.FUNCTIONS, "kernel.regularize_params.fn")
        if rp.target == "gabor+mask":
            _require(
                conv_type in MASKED_CONVS,
                "kernel.regularize_params.target=gabor+mask needs a FlexConv mask; "
                "use target=gabor "
                f"with conv.type={c.type} (mask.use={m.use})",
            )
        _require(rp.factor >= 0, f"kernel.regularize_params.factor must be >= 0, got {rp.factor}")


def _validate_dataset_params(cfg: DictConfig) -> None:
    p = cfg.dataset_params
    for key, allowed in SEQUENCE_ONLY_PARAMS.items():
        if p[key]:
            _require(
                cfg.dataset in allowed,
                f"dataset_params.{key}=True is only defined for dataset in {list(allowed)}, "
                f"got {cfg.dataset}",
            )
    if p.mfcc:
        _require(
            cfg.dataset == "SpeechCommands",
            f"dataset_params.mfcc=True is only defined for SpeechCommands, got {cfg.dataset}",
        )
    if p.drop_rate:
        _require(
            cfg.dataset in ("SpeechCommands", "CharTrajectories"),
            "dataset_params.drop_rate is only defined for SpeechCommands and CharTrajectories, "
            f"got {cfg.dataset}",
        )
    family = DATASETS.get(DATASETS_FLEXCONV[cfg.dataset][0])
    _require(
        not (p.root and getattr(family, "embedded", False)),
        f"dataset_params.root={p.root} is not used by dataset={cfg.dataset} (its data ships "
        "with the installed packages); remove it",
    )
    _require(
        p.memory_size == -1,
        "dataset_params.memory_size (copy-memory tasks) is not supported; remove it",
    )
    _require(
        p.seq_length == -1,
        f"dataset_params.seq_length is not used by dataset={cfg.dataset}; remove it",
    )


UNSUPPORTED = {
    # key: (default, why)
    "kernel.weight_norm": (False, "weight-normalised kernel networks are not implemented"),
    "kernel.steerable": (False, "steerable kernels are not implemented"),
    "kernel.bias_init": (None, "custom kernel bias initialisations are not implemented"),
    "kernel.sampling_rate_norm": (
        1.0,
        "kernels are rescaled by the resolution API; use run_crossres.py or "
        "ccnn.train.crossres.evaluate_at_resolution",
    ),
    "kernel.regularize_params.res": (
        0,
        "the Nyquist frequency comes from each layer's kernel grid",
    ),
    "kernel.regularize_params.res_offset": (
        0,
        "the Nyquist frequency comes from each layer's kernel grid",
    ),
    "kernel.regularize_params.gauss_factor": (0.5, "it had no effect in the published regulariser"),
    "cross_res.resize": ("", "inputs are always resized to source_res/target_res"),
}


def _validate_unsupported(cfg: DictConfig) -> None:
    for key, (default, why) in UNSUPPORTED.items():
        value = OmegaConf.select(cfg, key)
        _require(
            value == default or (default is None and value in ("None", "null", "")),
            f"{key}={value!r} is not supported ({why}); remove it",
        )


def _validate_pretrained(cfg: DictConfig) -> None:
    if cfg.pretrained:
        _require(
            bool(cfg.pretrained_params.filepath),
            "pretrained=True needs pretrained_params.filepath (a checkpoint or weights file)",
        )
        return
    require_defaults(
        cfg,
        FlexConvConfig,
        ("pretrained_params.filepath", "pretrained_strict"),
        "is used only with pretrained=True; set pretrained=true or remove it",
    )


def _validate_summary(cfg: DictConfig) -> None:
    s = list(cfg.summary)
    if s in ([], [0]):
        require_defaults(
            cfg,
            FlexConvConfig,
            ("summary_depth",),
            "sets the depth of the summary=[B, C, *spatial] table; set summary or remove it",
        )
        return
    _require(
        all(isinstance(v, int) and v > 0 for v in s) and len(s) >= 3,
        f"summary must be [0] (off) or an input shape [B, C, *spatial], got {s}",
    )
    _require(cfg.summary_depth >= 1, f"summary_depth must be >= 1, got {cfg.summary_depth}")


def _validate_crossres(cfg: DictConfig) -> None:
    cr = cfg.cross_res
    _require(
        cr.source_res > 0,
        f"cross_res.source_res must be > 0 for run_crossres.py, got {cr.source_res}",
    )
    _require(
        cr.target_res > 0,
        f"cross_res.target_res must be > 0 for run_crossres.py, got {cr.target_res}",
    )
    _require(
        cr.finetune_epochs >= 0, f"cross_res.finetune_epochs must be >= 0, got {cr.finetune_epochs}"
    )
    _require(
        not is_sequence_dataset(cfg),
        f"run_crossres.py needs an image dataset; dataset={cfg.dataset} is a sequence task",
    )
    _one_of(cr.interpolation, INTERPOLATIONS, "cross_res.interpolation")
    _require(
        cr.resize_blur_sigma > 0,
        f"cross_res.resize_blur_sigma must be > 0, got {cr.resize_blur_sigma}",
    )
    if not (cr.resize_blur or cr.blur):
        require_defaults(
            cfg,
            FlexConvConfig,
            ("cross_res.resize_blur_sigma",),
            "is the blur of cross_res.resize_blur/cross_res.blur, and neither is set; set one "
            "or remove it",
        )
    if cfg.dataset == "Imagenet-k":
        from ccnn.data.imagenet32 import RESOLUTIONS

        for key in ("source_res", "target_res"):
            _require(
                cr[key] in RESOLUTIONS,
                f"cross_res.{key}={cr[key]}: Imagenet-k exists only at {list(RESOLUTIONS)} px",
            )
        _require(
            cr.interpolation == "bilinear" and not cr.resize_blur and not cr.blur,
            "Imagenet-k is read at each resolution from its own files; cross_res.interpolation/"
            "resize_blur/blur do not apply",
        )
    _require(
        cfg.dataset not in ("Imagenet32",),
        "dataset=Imagenet32 has one resolution; use dataset=Imagenet-k for cross-resolution runs",
    )


def validate_with_meta(cfg: DictConfig, meta: DatasetMeta) -> None:
    """Checks that need the dataset's shapes."""
    if cfg.kernel.dim_linear:
        _require(
            cfg.kernel.dim_linear == meta.data_dim,
            f"kernel.dim_linear={cfg.kernel.dim_linear} but dataset={cfg.dataset} is "
            f"{meta.data_dim}D; remove kernel.dim_linear (it is set from the data)",
        )
    s = list(cfg.summary)
    if s not in ([], [0]):
        _require(
            len(s) == meta.data_dim + 2 and s[1] == meta.in_channels,
            f"summary={s} does not fit dataset={cfg.dataset}: inputs are (B, "
            f"{', '.join(map(str, meta.input_shape))})",
        )


# ---------------------------------------------------------------------------------------------
# config -> objects


def data_options(cfg: DictConfig, resolution: int | None = None) -> DataOptions:
    family, data_type = DATASETS_FLEXCONV[cfg.dataset]
    p = cfg.dataset_params
    params: dict[str, Any] = {}
    for key in ("permuted", "noise_padded", "mfcc"):
        if p[key]:
            params[key] = True
    if p.drop_rate:
        params["drop_rate"] = float(p.drop_rate)
    if family == "CharTrajectories":
        params["pad_mode"] = "mask"  # the published encoding: zero fill + mask channel
    if resolution is not None and family == "Imagenet-k":
        params["resolution"] = int(resolution)
    chosen = {k: v for k, v in params.items() if k != "pad_mode"}  # pad_mode: set above
    check_dataset_params("dataset_params", cfg.dataset, DATASETS.get(family), chosen, {})
    return DataOptions(
        name=family,
        data_type=data_type,
        data_dir=p.root or None,
        augment=augment_enabled(cfg),
        params=params,
        fake=p.fake,
    )


def build_datamodule(cfg: DictConfig, resolution: int | None = None) -> CCNNDataModule:
    """The data module; ``resolution`` (cross-resolution runs) resizes images to that side."""
    kwargs = dict(
        batch_size=cfg.train.batch_size,
        test_batch_size=cfg.train.batch_size,
        num_workers=-1,
        pin_memory=cfg.device in ("cuda", "auto") and torch.cuda.is_available(),
        seed=resolve_seed(cfg.seed),
    )
    opts = data_options(cfg, resolution)
    if resolution is None or cfg.dataset == "Imagenet-k":
        return CCNNDataModule(opts, **kwargs)
    from ccnn.data.resize import ResizedDataModule

    cr = cfg.cross_res
    return ResizedDataModule(
        opts,
        resolution=resolution,
        interpolation=cr.interpolation,
        blur_before=cr.resize_blur_sigma if cr.resize_blur else 0.0,
        blur_after=cr.resize_blur_sigma if cr.blur else 0.0,
        **kwargs,
    )


def resolve_horizon(horizon: Any, meta: DatasetMeta) -> int | tuple[int, ...]:
    """``conv.horizon``: an int, or ``"same"`` = the data resolution if odd, +1 if even."""
    if isinstance(horizon, str) and horizon.isdigit():
        horizon = int(horizon)
    if isinstance(horizon, int):
        return horizon
    sizes = tuple(n if n % 2 else n + 1 for n in meta.input_shape[1:])
    return sizes[0] if len(set(sizes)) == 1 else sizes


def conv_kwargs(cfg: DictConfig, meta: DatasetMeta) -> dict[str, Any]:
    """Map ``conv.*``, ``kernel.*`` and ``mask.*`` to the conv layers' keyword arguments."""
    c, k, m = cfg.conv, cfg.kernel, cfg.mask
    conv_type = effective_conv_type(cfg)
    causal = meta.data_dim == 1
    size = resolve_horizon(c.horizon, meta)
    use_fft = fft_choice(c.use_fft)
    if conv_type == "SRF":
        return {
            "order": 3,
            "init_scale": float(k.srf.scale),
            "k": 2.0,
            "bias": c.bias,
            "causal": causal,
        }
    if conv_type in DISCRETE_CONVS:
        return {"kernel_size": size, "causal": causal, "use_fft": use_fft, "bias": c.bias}
    default = KernelConfig()
    wanted: dict[str, tuple[str | None, Any, bool]] = {
        "hidden_channels": ("kernel.no_hidden", k.no_hidden, True),
        "num_layers": ("kernel.no_layers", k.no_layers, True),
        "omega_0": ("kernel.omega_0", k.omega_0, k.omega_0 != default.omega_0),
        "input_scale": ("kernel.input_scale", k.input_scale, k.input_scale != default.input_scale),
        "learn_omega_0": ("kernel.learn_omega_0", k.learn_omega_0, k.learn_omega_0),
        "activation": (
            "kernel.activ_function",
            k.activ_function or "ReLU",
            k.activ_function != default.activ_function,
        ),
        "norm": (
            "kernel.norm",
            "" if k.norm in ("", "Identity") else k.norm,
            k.norm not in ("", "Identity"),
        ),
        "init": (None, "flexconv", False),
        "bias": (None, True, False),
    }
    if k.type == "SIREN":  # SIREN needs omega_0 (published default there: 30 via the command)
        wanted["omega_0"] = ("kernel.omega_0", k.omega_0, True)
    if conv_type not in MASKED_CONVS and k.init_spatial_value != default.init_spatial_value:
        wanted["init_spatial_value"] = ("kernel.init_spatial_value", k.init_spatial_value, True)
    accepted = set(kernel_options(k.type))
    if k.type in ("MAGNet", "Gabor"):
        accepted.discard("omega_0")  # FlexConv's initialisation: frequencies from input_scale
    kernel_kwargs = select_options("kernel.type", k.type, accepted, wanted)
    kwargs: dict[str, Any] = {
        "kernel_type": k.type,
        "kernel_kwargs": kernel_kwargs,
        "kernel_size": size,
        "causal": causal,
        "use_fft": use_fft,
        "bias": c.bias,
        "chang_initialize": False,
    }
    if conv_type in MASKED_CONVS:
        kwargs["mask_type"] = m.type or "gaussian"
        kwargs["mask_kwargs"] = {
            "init_value": m.init_value,
            "threshold": m.threshold,
            "dynamic_cropping": m.dynamic_cropping,
            "learn_mean": True,
            "temperature": m.temperature,
        }
    return kwargs


def build_network(cfg: DictConfig, meta: DatasetMeta) -> nn.Module:
    """FlexNet (images), FlexTCN (sequences) or a CIFAR ResNet for ``cfg`` on ``meta``, built
    through the model registry (``create_model``)."""
    from ccnn.models import create_model  # the package registers every model

    out_channels = 1 if meta.num_classes == 2 else meta.num_classes
    n = cfg.net
    if n.type.startswith("CIFARResNet"):
        return create_model(n.type, num_classes=out_channels, in_channels=meta.in_channels)
    return create_model(
        "flextcn" if meta.data_dim == 1 else "flexnet",
        in_channels=meta.in_channels,
        out_channels=out_channels,
        data_dim=meta.data_dim,
        hidden_channels=n.no_hidden,
        num_blocks=n.no_blocks,
        block_width_factors=tuple(n.block_width_factors),
        conv_type=effective_conv_type(cfg),
        conv_kwargs=conv_kwargs(cfg, meta),
        norm=n.norm,
        nonlinearity=n.nonlinearity,
        dropout=n.dropout,
        dropout_in=n.dropout_in,
    )


# -- loss terms ---------------------------------------------------------------------------------


def loss_terms(cfg: DictConfig) -> list[tuple[str, float, Any]]:
    terms: list[tuple[str, float, Any]] = []
    if cfg.train.weight_decay > 0:
        terms.append(("weight_decay", float(cfg.train.weight_decay), kernel_l2_norm))
    if cfg.train.mask_l2_norm > 0:
        terms.append(("mask_l2_norm", float(cfg.train.mask_l2_norm), mask_l2_norm))
    if cfg.kernel.regularize and cfg.kernel.regularize_params.factor > 0:
        from ccnn.nn.aliasing import AntiAliasingRegularizer

        rp = cfg.kernel.regularize_params
        reg = AntiAliasingRegularizer(
            target=rp.target,
            method=rp.method,
            fn=rp.fn,
            factor=rp.factor,
            gauss_stddevs=rp.gauss_stddevs,
        )
        terms.append(("aliasing", float(rp.factor), reg))
    return terms


# -- optimisation and trainer ----------------------------------------------------------------


def optim_settings(cfg: DictConfig) -> tuple[OptimSettings, ScheduleSettings]:
    t = cfg.train
    sp = t.scheduler_params
    decay = sp.decay_steps
    if OmegaConf.is_list(decay) or isinstance(decay, list):
        decay_steps = [int(d) for d in decay]
    else:
        decay_steps = [] if decay in (None, -1, "-1") else [int(decay)]
    optim = OptimSettings(
        name=t.optimizer,
        lr=t.lr,
        mask_lr_ratio=t.mask_params_lr_factor,
        omega_0_lr_factor=t.omega_0_lr_factor,
        weight_decay=0.0,  # FlexConv's weight decay is a loss term (loss_terms)
        momentum=t.optimizer_params.momentum,
        nesterov=t.optimizer_params.nesterov,
    )
    schedule = ScheduleSettings(
        name=t.scheduler,
        warmup_epochs=sp.warmup_epochs,
        decay_steps=decay_steps,
        factor=sp.decay_factor,
        patience=sp.patience,
        mode="max",
        eta_min=COSINE_ETA_MIN if t.scheduler == "cosine" else 0.0,
    )
    return optim, schedule


def resolve_seed(seed: int) -> int:
    """``seed=-1`` draws a random seed (recorded in results.json)."""
    if seed >= 0:
        return int(seed)
    return int.from_bytes(os.urandom(4), "little") % (2**31 - 1)


def trainer_settings(cfg: DictConfig, run_dir: str, epochs: int | None = None) -> TrainerSettings:
    t = cfg.train
    epochs = t.epochs if epochs is None else epochs
    return TrainerSettings(
        run_dir=run_dir,
        epochs=epochs,
        device=cfg.device,
        grad_clip=t.grad_clip,
        patience=epochs + 1,  # FlexConv trains for all epochs (no early stopping)
        limit_batches=t.limit_batches,
        deterministic=cfg.deterministic,
        seed=cfg.seed,
        logger="csv" if cfg.debug else "wandb",
        wandb={"project": cfg.wandb.project, "entity": cfg.wandb.entity, "dir": cfg.wandb.dir},
        resume_from=t.resume,
        nonfinite_patience=t.nonfinite_patience,
        ema_decay=t.ema_decay,
    )


def with_seed(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` whose ``seed`` is concrete (``-1`` replaced by a random one)."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.set_readonly(cfg, False)
    cfg.seed = resolve_seed(cfg.seed)
    return cfg


__all__ = [
    "build_datamodule",
    "build_network",
    "conv_kwargs",
    "data_options",
    "loss_terms",
    "optim_settings",
    "resolve_horizon",
    "trainer_settings",
    "validate",
    "validate_with_meta",
    "with_seed",
]
