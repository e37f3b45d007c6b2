"""Datasets: one module per family, registered in ``DATASETS``; the Lightning data module."""

import importlib

from ccnn.data.base import DATASETS, DataConfigError, DataOptions, DatasetMeta, DatasetSplits
from ccnn.data.datamodule import CCNNDataModule

FAMILY_MODULES = ("digits", "vision", "imagenet32", "speech", "lra", "uea", "modelnet")
for _name in FAMILY_MODULES:
    try:
        importlib.import_module(f"ccnn.data.{_name}")
    except ModuleNotFoundError as _err:  # a family whose module is not written yet
        if _err.name != f"ccnn.data.{_name}":
            raise

__all__ = [
    "DATASETS",
    "CCNNDataModule",
    "DataConfigError",
    "DataOptions",
    "DatasetMeta",
    "DatasetSplits",
]
