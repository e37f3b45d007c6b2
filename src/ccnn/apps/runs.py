"""A trained model back from its run directory: ``ccnn.load_run(run_dir)``.

Works for the runs of ``main.py`` (CCNN) and ``run_experiment.py`` (FlexConv), whose
``results.json`` records the full configuration. The network is rebuilt exactly as the app built
it, the selected checkpoint is loaded (verified, tensors only) and the model is put in eval
mode::

    run = ccnn.load_run("outputs/2026-12-03/10-00-00")
    run.logits(x)                # logits for a batch as the data loaders give it
    run.evaluate("test")         # {"acc": ..., "loss": ...}, as reported in results.json
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ccnn.data.base import DatasetMeta
from ccnn.errors import OptionError
from ccnn.files import load_torch, read_json


@dataclass
class Run:
    """A finished run: its trained network (eval mode, CPU), configuration, data facts and
    recorded results."""

    model: nn.Module
    config: DictConfig
    meta: DatasetMeta
    results: dict[str, Any]
    checkpoint: Path
    app: str  # "main.py" or "run_experiment.py"
    _datamodule: Any = field(default=None, repr=False)

    def datamodule(self):
        """The run's data module (same splits, batch size and transforms)."""
        if self._datamodule is None:
            self._datamodule = _build_datamodule(self.app, self.config)
        return self._datamodule

    @torch.no_grad()
    def logits(self, x: torch.Tensor, **seq: torch.Tensor) -> torch.Tensor:
        """Logits for a batch as the data loaders give it (the dataset's batch transform, e.g.
        images read as sequences, is applied first, in evaluation mode)."""
        dm = self.datamodule()
        dm.setup()
        transform = dm.splits.batch_transform
        x = transform(x, False) if transform is not None else x
        return self.model(x, **seq)

    def evaluate(self, split: str = "test", limit_batches: int | None = None) -> dict[str, float]:
        """Accuracy and loss on ``split`` (``val`` or ``test``), computed as the run computed
        them (its ``train.limit_batches`` unless ``limit_batches`` is given)."""
        import lightning as L

        from ccnn.train.module import ClassificationModule

        if split not in ("val", "test"):
            raise OptionError(f"split must be 'val' or 'test', got {split!r}")
        limit = self.config.train.limit_batches if limit_batches is None else limit_batches
        limit = limit if limit and limit > 0 else None
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=limit,
            limit_test_batches=limit,
        )
        module = ClassificationModule(self.model, self.meta.num_classes)
        run = trainer.validate if split == "val" else trainer.test
        out = run(module, datamodule=self.datamodule(), verbose=False)
        self.model.eval()
        return {k.split("/", 1)[1]: float(v) for k, v in out[0].items() if k.startswith(split)}


def _app(config: dict[str, Any]) -> str:
    if isinstance(config.get("dataset"), dict) and "net" in config:
        return "main.py"
    if isinstance(config.get("dataset"), str):
        return "run_experiment.py"
    raise OptionError(
        "load_run reads runs of main.py and run_experiment.py; this results.json records "
        "another configuration (train.py runs keep their weights in phase_b_best.pt)"
    )


def _build_datamodule(app: str, cfg: DictConfig):
    import ccnn.data  # noqa: F401  (registers the dataset families)

    if app == "main.py":
        from ccnn.apps.ccnn_config import build_datamodule
    else:
        from ccnn.apps.flexconv_config import build_datamodule
    return build_datamodule(cfg)


def _build_network(app: str, cfg: DictConfig, meta: DatasetMeta) -> nn.Module:
    if app == "main.py":
        from ccnn.apps.ccnn_config import build_network
    else:
        from ccnn.apps.flexconv_config import build_network
    return build_network(cfg, meta)


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best") -> Run:
    """Rebuild the trained network of ``run_dir`` and load its weights.

    Args:
        run_dir: the folder with ``results.json`` and ``checkpoints/``.
        checkpoint: ``"best"`` (the checkpoint the run tested; ``last`` when the run had no
            validation split) or ``"last"``.
    """
    run_dir = Path(run_dir)
    results = read_json(run_dir / "results.json")
    if "config" not in results:
        raise OptionError(f"{run_dir / 'results.json'} records no configuration")
    app = _app(results["config"])
    cfg = OmegaConf.create(results["config"])
    if checkpoint not in ("best", "last"):
        raise OptionError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
    folder = run_dir / "checkpoints"
    path = folder / f"{checkpoint}.ckpt"
    if checkpoint == "best" and not path.is_file():
        path = folder / "last.ckpt"  # runs without a validation split test the final model
    datamodule = _build_datamodule(app, cfg)
    network = _trained_network(path, app, cfg, datamodule.meta, load_torch(path))
    return Run(network, cfg, datamodule.meta, results, path, app, datamodule)


def _trained_network(path: Path, app: str, cfg: DictConfig, meta: DatasetMeta, saved: dict):
    """The network ``cfg`` builds, with the weights of checkpoint ``saved``, in eval mode."""
    from ccnn.train.pretrained import network_state
    from ccnn.train.runner import check_state_fits

    torch.manual_seed(0)  # the initial weights are replaced; keep the global RNG predictable
    network = _build_network(app, cfg, meta)
    state = network_state(saved)
    config = OmegaConf.to_container(cfg, resolve=True)
    check_state_fits(path, state, network.state_dict(), saved.get("ccnn_config"), config)
    network.load_state_dict(state)
    return network.eval()


def module_from_checkpoint(path: str | os.PathLike):
    """A :class:`~ccnn.train.module.ClassificationModule` with the trained network of a
    ``main.py`` / ``run_experiment.py`` checkpoint, rebuilt from the configuration the
    checkpoint records (verified, tensors only) — what ``load_from_checkpoint`` returns."""
    from ccnn.train.module import ClassificationModule

    path = Path(path)
    saved = load_torch(path)
    if not isinstance(saved.get("ccnn_config"), dict):
        raise OptionError(
            f"{path} records no ccnn configuration (written by another program?); "
            "load_from_checkpoint needs a checkpoint of main.py or run_experiment.py"
        )
    app = _app(saved["ccnn_config"])
    cfg = OmegaConf.create(saved["ccnn_config"])
    meta = _build_datamodule(app, cfg).meta
    network = _trained_network(path, app, cfg, meta, saved)
    return ClassificationModule(network, meta.num_classes)
