"""Named models: ``ccnn.create_model(name, **kwargs)`` and ``ccnn.list_models()``."""

from __future__ import annotations

from typing import Any

from torch import nn

from ccnn.registry import Registry

MODELS: Registry = Registry("model")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. ``create_model("ccnn_4_140", in_channels=1,
    out_channels=10, data_dim=1)``. Unknown names raise a KeyError listing the known ones."""
    return MODELS.build(name, **kwargs)


def list_models() -> list[str]:
    return MODELS.names()
