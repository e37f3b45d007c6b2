"""Networks built from ``ccnn.nn`` layers, and the model registry."""

from ccnn.models import cifar_resnet as _cifar_resnet  # noqa: F401  (registers CIFARResNet*)
from ccnn.models import flexnet as _flexnet  # noqa: F401  (registers flexnet*, flextcn)
from ccnn.models import pointcloud as _pointcloud  # noqa: F401  (registers point_ccnn)
from ccnn.models import scattering_net as _scattering_net  # noqa: F401  (registers scattering_net)
from ccnn.models import variants as _variants  # noqa: F401  (registers the paper variants)
from ccnn.models.blocks import BLOCKS, block_widths
from ccnn.models.ccnn import CCNN
from ccnn.models.cifar_resnet import CIFARResNet
from ccnn.models.flexnet import FlexNet, FlexTCN
from ccnn.models.registry import MODELS, create_model, list_models

__all__ = [
    "BLOCKS",
    "CCNN",
    "CIFARResNet",
    "FlexNet",
    "FlexTCN",
    "MODELS",
    "block_widths",
    "create_model",
    "list_models",
]
