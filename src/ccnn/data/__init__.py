"""Datasets: one module per family, registered in ``DATASETS``; the Lightning data module."""

# importing a family module registers it in DATASETS
from ccnn.data import digits, imagenet32, lra, modelnet, speech, uea, vision  # noqa: F401
from ccnn.data.base import DATASETS, DataConfigError, DataOptions, DatasetMeta, DatasetSplits

__all__ = [
    "DATASETS",
    "CCNNDataModule",
    "DataConfigError",
    "DataOptions",
    "DatasetMeta",
    "DatasetSplits",
]


def __getattr__(name: str):
    # the Lightning data module is imported lazily: plain-torch users (e.g. train.py workers)
    # need not pay for importing Lightning
    if name == "CCNNDataModule":
        from ccnn.data.datamodule import CCNNDataModule

        return CCNNDataModule
    raise AttributeError(f"module 'ccnn.data' has no attribute {name!r}")
