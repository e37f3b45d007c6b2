"""Optimisers and learning-rate schedules from plain settings.

* Parameter groups come from the tags layers put on their parameters
  (:mod:`ccnn.nn.params`): Gaussian-mask parameters train at ``lr * mask_lr_ratio`` and
  learnable ``omega_0`` at ``lr * omega_0_lr_factor``. (The published CCNN selected mask
  parameters by a name that matched nothing, so its ratio never applied.)
* Weight decay ``published`` (default for the paper commands): the optimiser gets no decay; the
  training step adds ``weight_decay * sum ||p||_2`` (unsquared norms) over all parameters that are
  not inside kernel networks, plus the norms of the sampled convolution kernels
  (:func:`published_weight_decay`). ``decoupled``: the optimiser's own (decoupled for AdamW)
  weight decay.
* Schedules are stepped every optimiser step: linear warm-up from ~0 over ``warmup_epochs``,
  then ``cosine`` to 0, ``multistep`` (x ``factor`` at the given epochs), ``exponential``
  (x ``factor`` per epoch) or ``plateau`` (on the validation metric; no warm-up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ccnn.errors import OptionError
from ccnn.nn.conv import ContinuousConv
from ccnn.nn.params import KERNEL_NET, MASK, OMEGA_0, parameter_groups

WEIGHT_DECAY_TYPES = ("published", "decoupled")
SCHEDULERS = ("", "none", "cosine", "multistep", "exponential", "plateau")


class OptimConfigError(OptionError):
    pass


@dataclass
class OptimSettings:
    name: str = "Adam"
    lr: float = 1e-3
    mask_lr_ratio: float = 1.0
    omega_0_lr_factor: float = 1.0
    weight_decay: float = 0.0
    weight_decay_type: str = "published"
    momentum: float = -1.0
    nesterov: bool = False


@dataclass
class ScheduleSettings:
    name: str = ""
    warmup_epochs: float = -1
    warmup_steps: int = -1  # > 0: warm up over this many optimiser steps (wins over epochs)
    decay_steps: list[int] = field(default_factory=list)
    factor: float = -1.0
    patience: int = -1
    mode: str = "max"
    eta_min: float = 0.0


def build_optimizer(model: nn.Module, s: OptimSettings) -> torch.optim.Optimizer:
    """``torch.optim.<s.name>`` with default/mask/omega_0 parameter groups."""
    cls = getattr(torch.optim, s.name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        known = sorted(
            n
            for n in dir(torch.optim)
            if isinstance(getattr(torch.optim, n), type)
            and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
            and n != "Optimizer"
        )
        raise OptimConfigError(f"Unknown optimizer '{s.name}' (optimizer.name); supported: {known}")
    if s.lr <= 0:
        raise OptimConfigError(f"optimizer.lr must be > 0, got {s.lr}")
    if s.weight_decay_type not in WEIGHT_DECAY_TYPES:
        raise OptimConfigError(
            f"Unknown weight_decay_type '{s.weight_decay_type}'; "
            f"supported: {list(WEIGHT_DECAY_TYPES)}"
        )
    groups = parameter_groups(model, (MASK, OMEGA_0))
    lr_factor = {"default": 1.0, MASK: s.mask_lr_ratio, OMEGA_0: s.omega_0_lr_factor}
    param_groups = [
        {"params": params, "lr": s.lr * lr_factor[name], "name": name}
        for name, params in groups.items()
        if params
    ]
    kwargs: dict = {"lr": s.lr}
    kwargs["weight_decay"] = s.weight_decay if s.weight_decay_type == "decoupled" else 0.0
    if s.name == "SGD":
        kwargs["momentum"] = max(s.momentum, 0.0)
        kwargs["nesterov"] = s.nesterov
    return cls(param_groups, **kwargs)


def published_weight_decay(model: nn.Module) -> torch.Tensor:
    """Sum of unsquared L2 norms: non-kernel-net parameters and the last sampled kernels."""
    total = None
    for module in model.modules():
        tags = module.__dict__.get("_optim_tags", {})
        for name, p in module._parameters.items():
            if p is None or not p.requires_grad or tags.get(name) == KERNEL_NET:
                continue
            total = p.norm() if total is None else total + p.norm()
        if isinstance(module, ContinuousConv) and module.last_kernel is not None:
            total = (
                module.last_kernel.norm() if total is None else total + module.last_kernel.norm()
            )
    if total is None:
        return torch.zeros(())
    return total


def lr_lambda(
    s: ScheduleSettings, steps_per_epoch: int, total_epochs: int, base_lr: float | None = None
):
    """Per-step LR factor for warm-up + cosine / multistep / exponential.

    Cosine decays to ``s.eta_min / base_lr`` (an absolute floor ``eta_min`` for a group whose
    learning rate is ``base_lr``); without ``base_lr`` it decays to 0.
    """
    name = (s.name or "").lower()
    if s.warmup_steps > 0:
        warmup = int(s.warmup_steps)
    else:
        warmup = max(0, int(round(s.warmup_epochs * steps_per_epoch))) if s.warmup_epochs > 0 else 0
    total = max(1, steps_per_epoch * total_epochs)
    floor = min(1.0, s.eta_min / base_lr) if base_lr and s.eta_min > 0 else 0.0

    def warm(step: int) -> float | None:
        if warmup and step < warmup:
            return 1e-8 + (1.0 - 1e-8) * step / warmup
        return None

    def factor(step: int) -> float:
        w = warm(step)
        if w is not None:
            return w
        if name == "cosine":
            t = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))
        if name == "multistep":
            epoch = (step - warmup) // max(1, steps_per_epoch)
            return s.factor ** sum(epoch >= m for m in s.decay_steps)
        if name == "exponential":
            return s.factor ** ((step - warmup) // max(1, steps_per_epoch))
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, s: ScheduleSettings, steps_per_epoch: int, total_epochs: int
) -> dict | None:
    """A Lightning ``lr_scheduler`` config dict, or None for a constant learning rate."""
    name = (s.name or "").lower()
    if name not in SCHEDULERS:
        raise OptimConfigError(
            f"Unknown scheduler '{s.name}' (scheduler.name); "
            f"supported: {[n for n in SCHEDULERS if n]}"
        )
    if name in ("multistep", "exponential", "plateau") and s.factor <= 0:
        raise OptimConfigError(
            f"scheduler.factor must be > 0 for scheduler '{name}', got {s.factor}"
        )
    if name == "plateau":
        if s.warmup_epochs > 0 or s.warmup_steps > 0:
            raise OptimConfigError(
                "scheduler.name=plateau cannot be combined with warm-up; "
                "set scheduler.warmup_epochs=-1"
            )
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=s.mode, factor=s.factor, patience=max(s.patience, 0)
        )
        return {
            "scheduler": sched,
            "interval": "epoch",
            "monitor": "val/acc" if s.mode == "max" else "val/loss",
        }
    if name in ("", "none") and s.warmup_epochs <= 0 and s.warmup_steps <= 0:
        return None
    lambdas = [lr_lambda(s, steps_per_epoch, total_epochs, g["lr"]) for g in optimizer.param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return {"scheduler": sched, "interval": "step"}
