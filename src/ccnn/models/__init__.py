"""Networks built from ``ccnn.nn`` layers, and the model registry."""

from ccnn.models import variants as _variants  # noqa: F401  (registers the paper variants)
from ccnn.models.blocks import BLOCKS, block_widths
from ccnn.models.ccnn import CCNN
from ccnn.models.registry import MODELS, create_model, list_models

__all__ = ["BLOCKS", "CCNN", "MODELS", "block_widths", "create_model", "list_models"]
