"""Classify your own time series from arrays with the UEA preset — the library route to what
``python main.py dataset.name=UEA dataset.params.uea_name=<set>`` does on the command line.

::

    from ccnn import TimeSeriesClassifier
    clf = TimeSeriesClassifier().fit(X_train, y_train)     # X: (n, c, l) or a list of (c, l_i)
    accuracy = clf.score(X_test, y_test)
    clf = TimeSeriesClassifier().fit(series, y, times=timestamps)   # irregular sampling

Series may have unequal lengths (a list of ``(c, l_i)`` or ``(l_i,)`` arrays) and missing values
(NaN); both are excluded exactly (:mod:`ccnn.nn.masking`). With ``times`` (one array per series,
any unit), the kernels are evaluated at the true time differences; times are expressed in units
of the typical sampling interval of the training data (the median gap between consecutive
observations), which is stored with the classifier.

The network, optimiser, schedule and step budget are those of the ``uea`` experiment
(``src/ccnn/configs/ccnn/experiment/uea.yaml``), composed through the same Hydra config, built by
the same functions and trained on the same Lightning stack as ``main.py``; ``overrides`` take
the same ``key=value`` strings (e.g. ``["train.steps=200"]``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ccnn.data.base import DatasetMeta, DatasetSplits
from ccnn.errors import OptionError
from ccnn.nn.masking import pad_series

PRESET = "uea"


def _as_series(X: Any) -> list[np.ndarray]:
    if isinstance(X, np.ndarray | torch.Tensor) and np.ndim(X) in (2, 3):
        arr = np.asarray(X, dtype=np.float64)
        return list(arr[:, None] if arr.ndim == 2 else arr)
    if isinstance(X, Sequence) and len(X) > 0:
        return [np.asarray(s, dtype=np.float64) for s in X]
    raise OptionError(
        "X must be an array (n, l) / (n, c, l) or a non-empty list of (c, l_i) or (l_i,) arrays"
    )


class TimeSeriesClassifier:
    """Fit/predict/score on arrays with the UEA preset (see the module docstring).

    Args:
        seed: the run's seed (initial weights, batches).
        overrides: extra ``key=value`` settings of the CCNN config (``main.py`` syntax).
        device: ``auto``, ``cpu`` or ``cuda``.
        verbose: show Lightning's progress bar.
    """

    def __init__(
        self,
        seed: int = 0,
        overrides: Sequence[str] = (),
        device: str = "auto",
        verbose: bool = False,
    ):
        self.seed, self.device, self.verbose = seed, device, verbose
        self.overrides = list(overrides)
        self.network: torch.nn.Module | None = None

    # -- data ------------------------------------------------------------------------------
    def _tensors(self, X, times) -> list[torch.Tensor]:
        series = _as_series(X)
        if times is not None:
            times = [np.asarray(t, dtype=np.float64) / self.time_unit_ for t in times]
        values, mask, t = pad_series(series, times, dtype=torch.float64)
        if values.shape[1] != self.channels_:
            raise OptionError(
                f"the series have {values.shape[1]} channels; the classifier was fitted on "
                f"{self.channels_}"
            )
        values = (values - self.mean_[:, None]) / self.std_[:, None] * mask[:, None]
        tensors = [values.float()]
        if t is not None:
            start = torch.where(mask > 0, t, torch.inf).amin(-1, keepdim=True)  # (n, 1)
            start = start.nan_to_num(posinf=0.0)
            tensors += [mask.float(), ((t - start) * mask).float()]  # times from each start
        elif bool((mask < 1).any()) or self.masked_:
            tensors.append(mask.float())
        return tensors

    def _fit_statistics(self, X, times) -> None:
        series = _as_series(X)
        self.channels_ = series[0].shape[0] if series[0].ndim == 2 else 1
        values, mask, _ = pad_series(series, dtype=torch.float64)
        observed = values.transpose(0, 1)[:, mask > 0]  # (c, observed steps)
        self.mean_ = observed.mean(-1)
        std = observed.std(-1)
        self.std_ = torch.where(std > 0, std, torch.ones_like(std))
        self.masked_ = bool((mask < 1).any())
        self.time_unit_ = 1.0
        if times is not None:
            gaps = np.concatenate([np.diff(np.sort(np.asarray(t, np.float64))) for t in times])
            gaps = gaps[gaps > 0]
            if gaps.size == 0:
                raise OptionError("times must increase within a series")
            self.time_unit_ = float(np.median(gaps))

    # -- API -------------------------------------------------------------------------------
    def fit(self, X, y, times=None) -> TimeSeriesClassifier:
        """Train on series ``X`` with labels ``y`` (any hashable labels)."""
        from ccnn.apps.ccnn_config import (
            build_network,
            optim_settings,
            trainer_settings,
            training_epochs,
        )
        from ccnn.apps.ccnn_main import compose
        from ccnn.data.datamodule import CCNNDataModule
        from ccnn.train.module import ClassificationModule
        from ccnn.train.runner import build_trainer

        labels = np.asarray(y)
        self.classes_ = np.array(sorted(set(labels.tolist()), key=str))
        if len(self.classes_) < 2:
            raise OptionError("y must contain at least two classes")
        series = _as_series(X)  # converted once; the helpers below take the list as it is
        if len(labels) != len(series):
            raise OptionError(f"{len(labels)} labels for {len(series)} series")
        self._fit_statistics(series, times)
        tensors = self._tensors(series, times)
        targets = torch.tensor([self.classes_.tolist().index(v) for v in labels.tolist()])
        length = tensors[0].shape[-1]
        if times is not None:  # the kernels span the longest series in time units
            length = int(round(float(tensors[2].amax()))) + 1
        cfg = compose(
            [f"experiment={PRESET}", f"seed={self.seed}", f"device={self.device}", *self.overrides]
        )
        meta = DatasetMeta(
            self.channels_,
            len(self.classes_),
            1,
            (self.channels_, length),
            "sequence",
            {"timestamps": times is not None},
        )
        empty = TensorDataset(*(t[:0] for t in (tensors[0], targets, *tensors[1:])))
        train = TensorDataset(tensors[0], targets, *tensors[1:])
        splits = DatasetSplits(train, empty, empty, meta)
        datamodule = CCNNDataModule(
            None,
            batch_size=cfg.train.batch_size,
            num_workers=0,
            splits=splits,
            drop_last=cfg.train.drop_last,
            seed=cfg.seed,
        )
        import lightning as L

        L.seed_everything(cfg.seed, workers=True, verbose=False)
        self.network = build_network(cfg, meta)
        optim, schedule = optim_settings(cfg)
        module = ClassificationModule(self.network, meta.num_classes, optim, schedule)
        quiet = logging.getLogger("lightning.pytorch")
        level = quiet.level
        if not self.verbose:
            quiet.setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory() as run_dir:
            settings = trainer_settings(cfg, run_dir, training_epochs(cfg, len(train), length))
            settings.monitor, settings.logger, settings.plot_kernels = "", "none", False
            settings.progress_bar = self.verbose
            trainer, _ = build_trainer(settings)
            try:
                trainer.fit(module, datamodule=datamodule)
            finally:
                quiet.setLevel(level)
        self.network = module.network.cpu().eval()
        return self

    @torch.no_grad()
    def decision_function(self, X, times=None) -> np.ndarray:
        """Logits ``(n, classes)`` (``(n,)`` for two classes)."""
        if self.network is None:
            raise RuntimeError("call fit() before predicting")
        tensors = self._tensors(X, times)
        names = ("mask", "times")
        out = []
        for i in range(0, len(tensors[0]), 256):
            chunk = [t[i : i + 256] for t in tensors]
            out.append(self.network(chunk[0], **dict(zip(names, chunk[1:]))))
        logits = torch.cat(out)
        return (logits[:, 0] if logits.shape[1] == 1 else logits).numpy()

    def predict(self, X, times=None) -> np.ndarray:
        logits = self.decision_function(X, times)
        index = (logits > 0).astype(int) if logits.ndim == 1 else logits.argmax(-1)
        return self.classes_[index]

    def score(self, X, y, times=None) -> float:
        """Accuracy on ``X``, ``y``."""
        return float(np.mean(self.predict(X, times) == np.asarray(y)))


__all__ = ["TimeSeriesClassifier"]
