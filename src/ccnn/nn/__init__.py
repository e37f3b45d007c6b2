"""Layers with structured kernels, usable in any PyTorch model.

Imports torch/numpy/einops only (never hydra or lightning).
"""

from ccnn.nn.aliasing import AntiAliasingRegularizer, frequency_report
from ccnn.nn.batchnorm import GlobalBatchNorm, to_global_batchnorm
from ccnn.nn.conv import (
    CONVS,
    CKConv,
    ContinuousConv,
    Conv,
    DiscreteConv,
    FlexConv,
    SeparableCKConv,
    SeparableConv,
    SeparableFlexConv,
    build_conv,
    continuous_convs,
)
from ccnn.nn.kernels import (
    KERNELS,
    SIREN,
    FourierMFN,
    GaborMFN,
    KernelNet,
    MAGNet,
    MLPKernel,
    RFNet,
    build_kernel_net,
)
from ccnn.nn.layers import get_activation, get_dropout, get_norm
from ccnn.nn.masks import MASKS, GaussianMask, build_mask
from ccnn.nn.params import parameter_groups, tag_parameter, tagged_parameters
from ccnn.nn.pointconv import (
    POINT_CONVS,
    Neighbourhood,
    PointConv,
    PointFlexConv,
    SeparablePointFlexConv,
    SeparablePointFlexConvDist,
    build_neighbourhood,
    build_point_conv,
    knn,
)
from ccnn.nn.resolution import at_resolution, set_resolution
from ccnn.nn.srf import SRFConv

__all__ = [
    "CONVS", "KERNELS", "MASKS", "POINT_CONVS",
    "AntiAliasingRegularizer", "CKConv", "Conv", "ContinuousConv", "DiscreteConv", "FlexConv",
    "FourierMFN", "GaborMFN", "GaussianMask", "GlobalBatchNorm", "KernelNet", "MAGNet",
    "MLPKernel", "Neighbourhood",
    "PointConv", "PointFlexConv", "RFNet", "SIREN", "SRFConv", "SeparableCKConv", "SeparableConv",
    "SeparableFlexConv", "SeparablePointFlexConv", "SeparablePointFlexConvDist", "at_resolution",
    "build_conv", "build_kernel_net", "build_mask", "build_neighbourhood", "build_point_conv",
    "continuous_convs", "frequency_report", "get_activation", "get_dropout", "get_norm", "knn",
    "parameter_groups", "set_resolution", "tag_parameter",
    "tagged_parameters", "to_global_batchnorm",
]  # fmt: skip
