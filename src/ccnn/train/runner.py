"""Fit / select / test with PyTorch Lightning — the training stack shared by every app.

Model selection uses the validation split only (best checkpoint on ``val/acc``); the test split
is evaluated once, at the end, with the best checkpoint. Every run writes ``results.json`` in its
run directory.
"""

from __future__ import annotations

import importlib.util
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from ccnn.errors import OptionError
from ccnn.files import FileIntegrityError, load_torch, write_json
from ccnn.nn.batchnorm import to_global_batchnorm
from ccnn.train.callbacks import (
    EpochSeeding,
    KernelPlotCallback,
    MetricsCSVLogger,
    RecordConfig,
    VerifiedCheckpointIO,
    WeightAverage,
)
from ccnn.train.module import ClassificationModule

LIGHTNING_NOISE = (
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
    ".*does not have many workers.*",
)
"""Warnings from Lightning internals that users cannot act on: silenced while a run trains
(:func:`fit_and_test`), not for the whole process."""


class RunConfigError(OptionError):
    """Invalid run settings; the message says how to fix them."""


@dataclass
class TrainerSettings:
    run_dir: str = "."
    epochs: int = 1
    device: str = "auto"  # auto | cpu | cuda
    distributed: bool = False
    devices: int = -1
    num_nodes: int = 1
    mixed_precision: bool = False
    grad_clip: float = 0.0
    accumulate_grad_steps: int = 1
    patience: int = 100
    limit_batches: int = -1
    deterministic: bool = False
    seed: int = 0
    logger: str = "csv"  # csv | wandb | none
    wandb: dict[str, Any] = field(default_factory=dict)
    plot_kernels_every_epoch: bool = False
    plot_kernels: bool = True
    resume_from: str = ""
    progress_bar: bool = True
    monitor: str = "val/acc"  # "" = no validation split: train the full schedule, test the end
    nonfinite_patience: int = 0  # non-finite losses in a row before stopping; -1 = never stop
    ema_decay: float = 0.0  # > 0: evaluate and checkpoint an EMA of the weights


def resolve_accelerator(device: str) -> str:
    """``auto`` → gpu if CUDA is available, else cpu; ``cuda`` without a GPU is an error."""
    device = (device or "auto").lower()
    if device in ("cuda", "gpu"):
        if not torch.cuda.is_available():
            raise RunConfigError(
                "device=cuda was requested but no CUDA GPU is available; run with device=cpu "
                "(or device=auto to use a GPU when there is one)"
            )
        return "gpu"
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    raise RunConfigError(f"Unknown device '{device}'; use cpu, cuda or auto")


def precision_for(accelerator: str, mixed: bool) -> str:
    if not mixed:
        return "32-true"
    if accelerator == "gpu" and not torch.cuda.is_bf16_supported():
        return "16-mixed"
    return "bf16-mixed"


def build_trainer(
    s: TrainerSettings, extra_callbacks: list | None = None, resumed_at: tuple[int, int] = (0, 0)
) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Lightning trainer for ``s``; ``resumed_at`` = (epochs, optimiser steps) of the
    checkpoint a run resumes from (the metrics log then keeps the rows logged before it)."""
    accelerator = resolve_accelerator(s.device)
    strategy: Any = "auto"
    devices: Any = "auto"
    if s.distributed:
        available = torch.cuda.device_count() if accelerator == "gpu" else (os.cpu_count() or 1)
        wanted = s.devices if s.devices > 0 else (available if accelerator == "gpu" else 2)
        if accelerator == "gpu" and (available < 2 or wanted < 2):
            raise RunConfigError(
                f"train.distributed=True needs at least 2 GPUs, found {available}; set "
                "train.distributed=False (or run on a multi-GPU machine)"
            )
        if wanted > available and accelerator == "gpu":
            raise RunConfigError(
                f"train.avail_gpus={wanted} but only {available} GPUs are available"
            )
        strategy = "ddp" if accelerator == "gpu" else "ddp_spawn"
        devices = wanted
    run_dir = Path(s.run_dir)
    # Without a monitor (no validation split) the final model is the result: no "best"
    # checkpoint, no early stopping, no validation loop.
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=s.monitor or None,
        mode="max",
        auto_insert_metric_name=False,
        enable_version_counter=False,
        save_top_k=1 if s.monitor else 0,
    )
    # Lightning only refreshes save_last when a top-k checkpoint is saved; keep our own
    # last.ckpt, overwritten after every epoch, so an interrupted run can always resume.
    last = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="last", enable_version_counter=False
    )
    callbacks: list = [checkpoint, last, EpochSeeding(s.seed)]
    if s.ema_decay > 0:
        callbacks.append(WeightAverage(s.ema_decay))
    if s.monitor:
        callbacks.append(EarlyStopping(monitor=s.monitor, mode="max", patience=max(1, s.patience)))
    if s.plot_kernels:
        callbacks.append(
            KernelPlotCallback(run_dir / "kernels", every_epoch=s.plot_kernels_every_epoch)
        )
    loggers = _loggers(s, run_dir, resumed_at)
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    callbacks += extra_callbacks or []
    limit = s.limit_batches if s.limit_batches and s.limit_batches > 0 else None
    trainer = L.Trainer(
        default_root_dir=str(run_dir),
        accelerator=accelerator,
        devices=devices,
        num_nodes=max(1, s.num_nodes),
        strategy=strategy,
        # several processes: BatchNorm statistics of the global batch (GlobalBatchNorm, set up
        # in fit_and_test; works on CPU too) and our own data sharding (global batch semantics)
        use_distributed_sampler=False,
        precision=precision_for(accelerator, s.mixed_precision),
        max_epochs=s.epochs,
        gradient_clip_val=s.grad_clip if s.grad_clip > 0 else None,
        accumulate_grad_batches=max(1, s.accumulate_grad_steps),
        deterministic=s.deterministic,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[VerifiedCheckpointIO()],
        limit_train_batches=limit,
        limit_val_batches=limit if s.monitor else 0,
        limit_test_batches=limit,
        num_sanity_val_steps=0,
        enable_progress_bar=s.progress_bar,
        log_every_n_steps=10,
        enable_model_summary=False,
    )
    return trainer, checkpoint


def _loggers(s: TrainerSettings, run_dir: Path, resumed_at: tuple[int, int] = (0, 0)) -> list:
    if s.logger == "none":
        return []
    if s.logger == "wandb" and importlib.util.find_spec("wandb") is not None:
        from lightning.pytorch.loggers import WandbLogger

        os.environ.setdefault("WANDB_MODE", "offline")
        options = {k: v for k, v in s.wandb.items() if v}
        save_dir = options.pop("dir", None) or str(run_dir)  # FlexConv's wandb.dir
        return [WandbLogger(save_dir=save_dir, **options)]
    loggers: list = [
        MetricsCSVLogger(
            str(run_dir),
            name="logs",
            version="",
            start_epoch=resumed_at[0],
            start_step=resumed_at[1],
        )
    ]
    if importlib.util.find_spec("tensorboard") is not None:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(str(run_dir), name="tb", version=""))
    return loggers


def _single_device_trainer(s: TrainerSettings) -> L.Trainer:
    limit = s.limit_batches if s.limit_batches and s.limit_batches > 0 else None
    return L.Trainer(
        accelerator=resolve_accelerator(s.device),
        devices=1,
        precision=precision_for(resolve_accelerator(s.device), s.mixed_precision),
        logger=False,
        enable_checkpointing=False,
        plugins=[VerifiedCheckpointIO()],
        limit_val_batches=limit,
        limit_test_batches=limit,
        enable_progress_bar=s.progress_bar,
        enable_model_summary=False,
    )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _metrics(results: list[dict], stage: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in results or []:
        for k, v in d.items():
            if k.startswith(f"{stage}/"):
                out[k.split("/", 1)[1]] = float(v)
    return out


@dataclass
class RunPlan:
    """Everything a run is made of, built and checked before anything trains: every option of
    an app's configuration acts through one of these (see ``tests/test_every_option.py``)."""

    datamodule: Any
    module: Any  # ClassificationModule: the network, optimiser, schedule and loss settings
    settings: TrainerSettings
    do_train: bool
    test_before_train: bool

    def fit_and_test(self, config: dict | None = None) -> dict:
        """Train (if planned) and test; ``config`` is recorded with the results."""
        return fit_and_test(
            self.module,
            self.datamodule,
            self.settings,
            do_train=self.do_train,
            test_before_train=self.test_before_train,
            config=config,
        )


def fit_and_test(
    module: ClassificationModule,
    datamodule: L.LightningDataModule,
    s: TrainerSettings,
    *,
    do_train: bool = True,
    test_before_train: bool = False,
    config: dict[str, Any] | None = None,
    extra_results: dict[str, Any] | None = None,
    extra_callbacks: list | None = None,
) -> dict[str, Any]:
    """Train (selecting on validation), test the best checkpoint once, write ``results.json``."""
    with warnings.catch_warnings():
        for message in LIGHTNING_NOISE:
            warnings.filterwarnings("ignore", message=message)
        return _fit_and_test(
            module,
            datamodule,
            s,
            do_train=do_train,
            test_before_train=test_before_train,
            config=config,
            extra_results=extra_results,
            extra_callbacks=extra_callbacks,
        )


def _fit_and_test(
    module: ClassificationModule,
    datamodule: L.LightningDataModule,
    s: TrainerSettings,
    *,
    do_train: bool,
    test_before_train: bool,
    config: dict[str, Any] | None,
    extra_results: dict[str, Any] | None,
    extra_callbacks: list | None,
) -> dict[str, Any]:
    start = time.time()
    L.seed_everything(s.seed, workers=True, verbose=False)
    module.nonfinite_patience = s.nonfinite_patience
    if s.distributed:
        to_global_batchnorm(module.network)
    ckpt = (s.resume_from or None) if do_train else None
    resumed_at = check_resume(ckpt, module, s.epochs, config) if ckpt else (0, 0)
    callbacks = [RecordConfig(config), *(extra_callbacks or [])]
    trainer, checkpoint = build_trainer(s, callbacks, resumed_at)
    results: dict[str, Any] = {"params": count_parameters(module.network)}
    if test_before_train:
        results["test_before_train"] = _metrics(
            trainer.test(module, datamodule=datamodule, verbose=False), "test"
        )
    if do_train:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
        if not trainer.is_global_zero:  # DDP: rank 0 evaluates once and writes the results
            return results
        best = checkpoint.best_model_path or None
        last = Path(s.run_dir) / "checkpoints" / "last.ckpt"
        results["epochs"] = (
            load_torch(last)["epoch"] + 1 if last.exists() else trainer.current_epoch
        )
        results["best_checkpoint"] = best
        val_ckpt = best if best and Path(best).exists() else None
        # evaluate on one device so every example counts exactly once
        evaluator = _single_device_trainer(s) if s.distributed else trainer
        results["val"] = (
            _metrics(
                evaluator.validate(
                    module, datamodule=datamodule, ckpt_path=val_ckpt, verbose=False
                ),
                "val",
            )
            if s.monitor
            else {}
        )
        results["test"] = _metrics(
            evaluator.test(module, datamodule=datamodule, ckpt_path=val_ckpt, verbose=False), "test"
        )
    else:
        results["epochs"] = 0
        results["val"] = _metrics(
            trainer.validate(module, datamodule=datamodule, verbose=False), "val"
        )
        results["test"] = _metrics(
            trainer.test(module, datamodule=datamodule, verbose=False), "test"
        )
    results["wall_time_s"] = round(time.time() - start, 3)
    results.update(extra_results or {})
    if config is not None:
        results["config"] = config
    if trainer.is_global_zero:
        write_json(Path(s.run_dir) / "results.json", results)
    return results


def check_resume(
    path: str, module: ClassificationModule, epochs: int, config: dict[str, Any] | None
) -> tuple[int, int]:
    """Verify the checkpoint to resume from (integrity, network, epochs); return the epochs and
    optimiser steps it completed."""
    ckpt = load_torch(path)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict) or "epoch" not in ckpt:
        raise FileIntegrityError(
            f"checkpoint {path} is not a training checkpoint (no state_dict/epoch); resume from "
            "<run>/checkpoints/last.ckpt"
        )
    check_state_fits(path, state, module.state_dict(), ckpt.get("ccnn_config"), config)
    done = int(ckpt["epoch"]) + 1
    if done > epochs:
        raise RunConfigError(
            f"checkpoint {path} already completed {done} epochs but this run has only {epochs}; "
            f"resume with train.epochs >= {done}"
        )
    return done, int(ckpt.get("global_step", 0))


ARCHITECTURE_KEYS = ("net.", "conv.", "kernel.", "mask.", "dataset.")
"""Configuration sections that decide the shapes of the network's parameters."""


def check_state_fits(
    path: Any,
    saved: dict[str, torch.Tensor],
    own: dict[str, torch.Tensor],
    saved_config: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> None:
    """Raise a one-line :class:`RunConfigError` when state dict ``saved`` (from ``path``) does
    not fit ``own``, naming the options that differ when both configurations are known."""
    problem = None
    for key, value in own.items():
        other = saved.get(key)
        if other is None:
            problem = f"it has no parameter {key}"
        elif tuple(other.shape) != tuple(value.shape):
            problem = (
                f"parameter {key} has shape {tuple(other.shape)} in the file and "
                f"{tuple(value.shape)} here"
            )
        if problem:
            break
    else:
        extra = [k for k in saved if k not in own]
        if extra:
            problem = f"it has parameters this network lacks ({', '.join(extra[:3])})"
    if problem is None:
        return
    diff = _config_difference(saved_config, config) if saved_config and config else []
    if diff:
        theirs = ", ".join(f"{k}={a}" for k, a, _ in diff)
        ours = ", ".join(f"{k}={b}" for k, _, b in diff)
        raise RunConfigError(
            f"checkpoint {path} was written by a network with {theirs}; this run has {ours}; "
            "use the same options to load it, or start a fresh run"
        )
    raise RunConfigError(
        f"checkpoint {path} does not fit this network: {problem}; build the network with the "
        "options it was trained with"
    )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config_difference(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    fa, fb = _flatten(a), _flatten(b)
    keys = [k for k in dict.fromkeys([*fa, *fb]) if k.startswith(ARCHITECTURE_KEYS)]
    return [(k, fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k)][:4]
