"""Lightning callbacks, loggers and checkpoint I/O: verified checkpoints, per-epoch seeding,
a metrics log that survives resuming, kernel plots at the end of training."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ccnn.files import load_torch, save_torch
from ccnn.train.plots import plot_kernels


class VerifiedCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O through :mod:`ccnn.files`: atomic writes with a content digest;
    loads only tensors and plain data (``weights_only=True``) and verifies the digest."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        save_torch(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_torch(path, map_location=map_location or "cpu")


class KernelPlotCallback(L.Callback):
    """Plot kernels at the end of training (and after every validation if ``every_epoch``)."""

    def __init__(self, out_dir: str | os.PathLike, every_epoch: bool = False):
        self.out_dir, self.every_epoch = Path(out_dir), every_epoch

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        fitting = trainer.state.fn == "fit"
        if self.every_epoch and fitting and trainer.is_global_zero and not trainer.sanity_checking:
            path = plot_kernels(
                pl_module.network, self.out_dir / f"kernels_epoch{trainer.current_epoch:03d}.png"
            )
            logger = trainer.logger
            if path is not None and logger is not None and hasattr(logger, "log_image"):
                logger.log_image(key="kernels", images=[str(path)])

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            plot_kernels(pl_module.network, self.out_dir / "kernels_final.png")


class EpochSeeding(L.Callback):
    """Re-seed ``random``, NumPy and torch at the start of every training epoch from
    ``(seed, epoch, rank)``, so dropout and training-time augmentation in epoch ``e`` draw the
    same numbers whether or not the run was interrupted and resumed before it."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        import random

        import numpy as np

        from ccnn.data.datamodule import epoch_seed

        s = epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)


class RecordConfig(L.Callback):
    """Store the run's configuration in every checkpoint (``ccnn_config``), so a checkpoint that
    does not fit the network can say which option differs."""

    def __init__(self, config: dict[str, Any] | None):
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self.config is not None:
            checkpoint["ccnn_config"] = self.config


class _ResumedWriter(ExperimentWriter):
    """Keeps the ``metrics.csv`` rows logged before the checkpoint (epochs before
    ``start_epoch``; rows without an epoch, such as learning rates, before ``start_step``) and
    appends after them."""

    def __init__(self, log_dir: str, start_epoch: int, start_step: int):
        self.start_epoch, self.start_step = start_epoch, start_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if self._before_checkpoint(r)]
        # rows logged after the checkpoint (the interrupted epoch) are dropped: they are rerun
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        self.metrics_keys = sorted(keys)

    def _before_checkpoint(self, row: dict[str, str]) -> bool:
        try:
            if row.get("epoch"):
                return float(row["epoch"]) < self.start_epoch
            return float(row.get("step") or 0) < self.start_step
        except ValueError:
            return True


class MetricsCSVLogger(CSVLogger):
    """Lightning's CSV logger; when a run resumes from a checkpoint taken after ``start_epoch``
    epochs (``start_step`` optimiser steps) in the same folder, the rows logged before it stay
    in ``metrics.csv`` and the new ones are appended."""

    def __init__(self, *args: Any, start_epoch: int = 0, start_step: int = 0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.start_epoch, self.start_step = start_epoch, start_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            writer = (
                _ResumedWriter(self.log_dir, self.start_epoch, self.start_step)
                if self.start_epoch > 0
                else ExperimentWriter(self.log_dir)
            )
            self._experiment = writer
        return self._experiment


class WeightAverage(L.Callback):
    """Exponential moving average of the network's weights (``train.ema_decay``).

    After every optimiser step ``ema = decay * ema + (1 - decay) * weights`` (buffers such as
    BatchNorm statistics are copied). Validation and testing run on the averaged weights, and
    checkpoints store them as the model's ``state_dict`` — so the best checkpoint, the test
    result and :func:`ccnn.load_run` all use them — with the raw training weights kept under
    ``ccnn_raw_state_dict`` so that a resumed run continues exactly.
    """

    RAW_KEY = "ccnn_raw_state_dict"

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.average: torch.optim.swa_utils.AveragedModel | None = None
        self._raw: dict[str, torch.Tensor] | None = None

    def _ensure(self, pl_module) -> torch.optim.swa_utils.AveragedModel:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        if self.average is None:
            self.average = AveragedModel(
                pl_module.network, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True
            )
        return self.average

    def on_fit_start(self, trainer, pl_module) -> None:
        self._ensure(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is not None:  # a skipped (non-finite) step changes nothing
            self._ensure(pl_module).update_parameters(pl_module.network)

    # -- evaluate on the averaged weights -------------------------------------------------
    def _swap_in(self, pl_module) -> None:
        if self.average is None or self._raw is not None:
            return
        self._raw = {k: v.detach().clone() for k, v in pl_module.network.state_dict().items()}
        pl_module.network.load_state_dict(self.average.module.state_dict())

    def _swap_out(self, pl_module) -> None:
        if self._raw is not None:
            pl_module.network.load_state_dict(self._raw)
            self._raw = None

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit":
            self._swap_in(pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            return  # checkpoints are written after this hook; swapped back in on_train_epoch_start
        self._swap_out(pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._swap_out(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._swap_in(pl_module)  # the trained model is the averaged one
        self._raw = None

    # -- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self.average is None:
            return
        raw = self._raw or pl_module.network.state_dict()
        prefix = "network."
        checkpoint[self.RAW_KEY] = {prefix + k: v.detach().clone() for k, v in raw.items()}
        for k, v in self.average.module.state_dict().items():
            checkpoint["state_dict"][prefix + k] = v.detach().clone()
        checkpoint["ccnn_ema_updates"] = int(self.average.n_averaged)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        raw = checkpoint.get(self.RAW_KEY)
        if raw is None or trainer.state.fn != "fit":
            return  # evaluation uses the checkpoint's model weights: the averaged ones
        average = self._ensure(pl_module)
        prefix = "network."
        ema = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items()}
        average.module.load_state_dict(ema)
        average.n_averaged.fill_(int(checkpoint.get("ccnn_ema_updates", 1)))
        pl_module.network.load_state_dict({k[len(prefix) :]: v for k, v in raw.items()})
