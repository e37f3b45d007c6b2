"""The cross-resolution protocol (FlexConv, arXiv:2110.08059, §4.3 and App. A) on the shared
training stack.

* :func:`run_crossres`: train at the source resolution, evaluate the same network at the target
  resolution with every continuous kernel resampled (:func:`ccnn.nn.set_resolution`: the same
  function on a grid ``scale`` times denser over the same extent; other layers that define
  ``set_resolution``, e.g. N-Jet/SRF, are told too; discrete layers are unchanged), then
  fine-tune there with a fresh optimiser. :class:`CrossResPlan` holds what it needs.
* :func:`evaluate` / :func:`evaluate_at_resolution`: accuracy of a trained network on data at
  another resolution, without fine-tuning — any CCNN/FlexNet/ResNet and any checkpoint::

      net = build the network as trained; net.load_state_dict(network_state(load_torch(ckpt)))
      dm = ResizedDataModule(opts, resolution=32, batch_size=256)   # trained at 16
      evaluate_at_resolution(net, dm, scale=32 / 16)                # {"acc": ..., "loss": ...}

The data side (resizing any 2D family, blurs) is :mod:`ccnn.data.resize`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ccnn.data.datamodule import CCNNDataModule
from ccnn.errors import OptionError
from ccnn.files import load_torch, save_torch, write_json
from ccnn.nn.resolution import at_resolution, set_resolution
from ccnn.train.pretrained import network_state
from ccnn.train.runner import RunPlan, TrainerSettings, fit_and_test


@torch.no_grad()
def evaluate(
    network: nn.Module,
    datamodule: CCNNDataModule,
    split: str = "test",
    device: torch.device | str | None = None,
    limit_batches: int = -1,
) -> dict[str, float]:
    """Accuracy and cross-entropy of ``network`` on ``split`` (``"test"`` or ``"val"``).

    Batches go through the datamodule's batch transform (e.g. the resize), in eval mode.
    """
    if split not in ("test", "val"):
        raise OptionError(f"split must be 'test' or 'val', got {split!r}")
    datamodule.setup()
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    transform = datamodule.splits.batch_transform
    if device is None:
        ref = next(iter(network.parameters()), None)
        device = ref.device if ref is not None else torch.device("cpu")
    was_training = network.training
    network.eval()
    correct, loss_sum, count = 0, 0.0, 0
    try:
        for i, batch in enumerate(loader):
            if 0 < limit_batches <= i:
                break
            x, y = batch[0].to(device), batch[1].to(device)
            if transform is not None:
                x = transform(x, False)
            logits = network(x)
            if logits.shape[-1] == 1:  # binary task: one logit
                logits = logits.reshape(-1)
                loss_sum += F.binary_cross_entropy_with_logits(
                    logits, y.float(), reduction="sum"
                ).item()
                correct += int(((logits > 0).long() == y).sum())
            else:
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                correct += int((logits.argmax(-1) == y).sum())
            count += len(y)
    finally:
        network.train(was_training)
    if count == 0:
        raise OptionError(f"the {split} split is empty")
    return {"acc": correct / count, "loss": loss_sum / count}


def evaluate_at_resolution(
    network: nn.Module,
    datamodule: CCNNDataModule,
    scale: float | Sequence[float],
    split: str = "test",
    device: torch.device | str | None = None,
    limit_batches: int = -1,
) -> dict[str, float]:
    """Evaluate a trained network on ``datamodule`` (data at the NEW resolution) with its
    continuous kernels resampled for ``scale`` = new resolution / training resolution, without
    fine-tuning. The network's resolution is restored afterwards."""
    with at_resolution(network, scale):
        return evaluate(network, datamodule, split, device, limit_batches)


@dataclass
class CrossResPlan:
    """A cross-resolution run: train as ``source`` (at ``source_res``), evaluate on ``target``
    (the same data at ``target_res``) with every continuous kernel resampled by
    ``target_res / source_res``, then fine-tune there with ``finetune`` (``None``: no
    fine-tuning)."""

    source: RunPlan
    target: CCNNDataModule
    source_res: int
    target_res: int
    finetune: TrainerSettings | None

    @property
    def scale(self) -> float:
        return self.target_res / self.source_res


def run_crossres(
    plan: CrossResPlan,
    run_dir: str | Path,
    make_module: Callable[[nn.Module, Any], Any],
    *,
    device: torch.device | str = "cpu",
    limit_batches: int = -1,
    config: dict[str, Any] | None = None,
    after_source: Callable[[nn.Module], None] | None = None,
) -> dict[str, Any]:
    """Run ``plan``: train at the source resolution (best checkpoint restored, network saved as
    ``source_network.pt``; ``after_source(network)`` then, e.g. for reports), evaluate at the
    target resolution before fine-tuning, fine-tune with a fresh module from
    ``make_module(network, target_meta)``, and write ``results.json`` (with ``config``) in
    ``run_dir``. Returns the results."""
    start = time.time()
    run_dir = Path(run_dir)
    network = plan.source.module.network
    source = plan.source.fit_and_test()
    best = source.get("best_checkpoint")
    if best and Path(best).exists():
        network.load_state_dict(network_state(load_torch(best)))
    save_torch(network.state_dict(), run_dir / "source_network.pt")
    if after_source is not None:
        after_source(network)

    network.to(device)
    changed = set_resolution(network, plan.scale)
    before = evaluate(network, plan.target, "test", device, limit_batches)
    source_acc = source["test"]["acc"]
    print(
        f"[crossres] {plan.source_res}px -> {plan.target_res}px ({changed} layers resampled): "
        f"test acc {source_acc:.4f} -> {before['acc']:.4f} before fine-tuning "
        f"({before['acc'] - source_acc:+.4f})"
    )
    finetune: dict[str, Any] = {}
    if plan.finetune is not None:
        module = make_module(network, plan.target.meta)
        finetune = fit_and_test(module, plan.target, plan.finetune)
    final = finetune or {
        "val": evaluate(network, plan.target, "val", device, limit_batches),
        "test": before,
    }
    results = {
        "params": source["params"],
        "val": final["val"],
        "test": final["test"],
        "epochs": source.get("epochs", 0) + finetune.get("epochs", 0),
        "wall_time_s": round(time.time() - start, 3),
        "source_res": plan.source_res,
        "target_res": plan.target_res,
        "source_acc": source_acc,
        "target_acc_before_finetune": before["acc"],
        "change_before_finetune": before["acc"] - source_acc,
        "target_acc_after_finetune": finetune["test"]["acc"] if finetune else None,
        "source": source,
        "finetune": finetune or None,
        "config": config,
    }
    write_json(run_dir / "results.json", results)
    return results
