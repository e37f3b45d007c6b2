"""LightningModule for classification with any ``ccnn`` network.

It receives a built network and optimiser/schedule settings (never a whole config). Binary
tasks (``num_classes == 2``) use one logit and BCE-with-logits. Extra loss terms (the published
weight-decay norm, FlexConv's anti-aliasing penalty, ...) are callables ``fn(network) -> loss``.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from ccnn.errors import OptionError
from ccnn.train.optim import (
    OptimSettings,
    ScheduleSettings,
    build_optimizer,
    build_scheduler,
    published_weight_decay,
)

LossTerm = Callable[[nn.Module], torch.Tensor]
SEQUENCE_FIELDS = ("mask", "times")
"""Batch entries after ``(x, y)``, passed to the network by name (see :mod:`ccnn.nn.masking`)."""


def split_batch(batch) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(x, y[, mask[, times]])`` → ``x, y, {"mask": ..., "times": ...}``."""
    x, y, *extra = batch
    if len(extra) > len(SEQUENCE_FIELDS):
        raise OptionError(f"batches are (x, y[, mask[, times]]); got {2 + len(extra)} entries")
    return x, y, dict(zip(SEQUENCE_FIELDS, extra))


class TrainingDiverged(RuntimeError):
    """The training loss became non-finite; the message names the step and the likely cause."""


class ClassificationModule(L.LightningModule):
    """Train/evaluate ``network`` on ``(x, y)`` batches; logs ``{train,val,test}/{loss,acc}``.

    Args:
        network: maps ``(b, c, *s)`` to ``(b, num_classes)`` logits (``(b, 1)`` if binary).
        num_classes: classes of the task.
        optim, schedule: optimiser and LR-schedule settings.
        loss_terms: extra ``(name, weight, fn)`` terms added to the training loss.
        report_top5: also log top-5 accuracy.
        track_grad_norm: log the gradient p-norm (``train.track_grad_norm``; -1 = off).
        nonfinite_patience: a non-finite training loss skips its optimiser step; more than this
            many in a row stop the run with :class:`TrainingDiverged` (0: stop at the first;
            -1: never check, train on whatever the loss is).
    """

    def __init__(
        self,
        network: nn.Module,
        num_classes: int,
        optim: OptimSettings | None = None,
        schedule: ScheduleSettings | None = None,
        loss_terms: list[tuple[str, float, LossTerm]] | None = None,
        report_top5: bool = False,
        track_grad_norm: float = -1,
        nonfinite_patience: int = 0,
    ):
        super().__init__()
        self.network = network
        self.num_classes = num_classes
        self.binary = num_classes == 2
        self.optim = optim or OptimSettings()
        self.schedule = schedule or ScheduleSettings()
        self.loss_terms = list(loss_terms or [])
        if self.optim.weight_decay > 0 and self.optim.weight_decay_type == "published":
            self.loss_terms.append(
                ("weight_decay", self.optim.weight_decay, published_weight_decay)
            )
        self.report_top5 = report_top5 and num_classes > 5
        self.track_grad_norm = track_grad_norm
        self.nonfinite_patience = nonfinite_patience
        self._nonfinite_in_a_row = 0

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, **kwargs):
        """The module of a ``main.py`` / ``run_experiment.py`` checkpoint, ready to evaluate
        (``trainer.test(module, datamodule=...)``): the network is rebuilt from the
        configuration recorded in the checkpoint and its weights are loaded (verified, tensors
        only). ``map_location`` and other Lightning arguments are not needed: the module is
        returned on the CPU."""
        from ccnn.apps.runs import module_from_checkpoint

        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        return module_from_checkpoint(checkpoint_path)

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.track_grad_norm > 0:
            from lightning.pytorch.utilities import grad_norm

            norms = grad_norm(self.network, norm_type=self.track_grad_norm)
            key = f"grad_{float(self.track_grad_norm)}_norm_total"
            if key in norms:
                self.log("train/grad_norm", norms[key], on_step=True, on_epoch=False)

    def forward(self, x: torch.Tensor, **seq: torch.Tensor) -> torch.Tensor:
        return self.network(x, **seq)

    def _loss_and_metrics(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
        if self.binary:
            logits = logits.reshape(-1)
            loss = F.binary_cross_entropy_with_logits(logits, y.float())
            pred = (logits > 0).long()
            metrics = {"acc": (pred == y).float().mean()}
        else:
            loss = F.cross_entropy(logits, y)
            metrics = {"acc": (logits.argmax(-1) == y).float().mean()}
            if self.report_top5:
                top5 = logits.topk(5, dim=-1).indices
                metrics["acc_top5"] = (top5 == y[:, None]).any(-1).float().mean()
        return loss, metrics

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y, seq = split_batch(batch)
        logits = self.network(x, **seq)
        loss, metrics = self._loss_and_metrics(logits, y)
        total = loss
        for name, weight, fn in self.loss_terms:
            term = fn(self.network)
            self.log(f"train/{name}", term.detach(), on_step=False, on_epoch=True)
            total = total + weight * term.to(loss.device)
        if self.nonfinite_patience >= 0 and not bool(torch.isfinite(total)):
            return self._nonfinite(total, batch_idx)
        self._nonfinite_in_a_row = 0
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", metrics["acc"], on_step=False, on_epoch=True, prog_bar=True)
        return total

    def _nonfinite(self, total: torch.Tensor, batch_idx: int) -> None:
        """Skip this step (Lightning skips the update when ``training_step`` returns None), or
        stop the run when the patience is used up."""
        self._nonfinite_in_a_row += 1
        if self._nonfinite_in_a_row <= self.nonfinite_patience:
            return None
        trainer = self.trainer
        where = (
            f"epoch {trainer.current_epoch}, batch {batch_idx} (optimiser step "
            f"{trainer.global_step})"
            if trainer is not None
            else f"batch {batch_idx}"
        )
        ckpt = getattr(getattr(trainer, "checkpoint_callback", None), "dirpath", None)
        kept = f"; checkpoints of the last good epoch are kept in {ckpt}" if ckpt else ""
        raise TrainingDiverged(
            f"training loss is {total.item()} at {where}: the run diverged — the learning rate "
            f"({self.optim.lr:g}) is probably too high, or the data hold NaN/inf values{kept} "
            "(train.nonfinite_patience=N skips up to N bad steps; -1 never stops)"
        )

    def _eval_step(self, batch, stage: str) -> None:
        x, y, seq = split_batch(batch)
        loss, metrics = self._loss_and_metrics(self.network(x, **seq), y)
        sync = self.trainer is not None and self.trainer.world_size > 1
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=sync)
        for k, v in metrics.items():
            self.log(f"{stage}/{k}", v, on_epoch=True, prog_bar=k == "acc", sync_dist=sync)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self):
        optimizer = build_optimizer(self.network, self.optim)
        trainer = self.trainer
        max_epochs = max(1, trainer.max_epochs or 1)
        total_steps = trainer.estimated_stepping_batches
        steps_per_epoch = (
            max(1, int(total_steps // max_epochs)) if total_steps != float("inf") else 1
        )
        scheduler = build_scheduler(optimizer, self.schedule, steps_per_epoch, max_epochs)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
