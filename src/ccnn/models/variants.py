"""The paper variants of CCNN (``ccnn_<blocks>_<width>``), as in CCNN Tables 1-2.

Defaults follow the published commands: SeparableFlexConv with a 3-layer MAGNet kernel
(32 hidden units for CCNN-4,140, 64 for CCNN-6,380), Gaussian masks (init 0.075, threshold
0.1, dynamic cropping), S4 prenorm blocks, BatchNorm, GELU; causal "same"-size kernels in 1D
and 33x33 kernels in 2D. Every default can be overridden by keyword.

The point-cloud variants (``point_ccnn_<blocks>_<width>``, the ModelNet40 commands) share the
block structure with separable point FlexConvs over a kNN neighbourhood: MAGNet kernels with
ω0 = 500, 256 neighbours for CCNN-4,140 and 64 (with the relative distance as an extra kernel
input) for CCNN-6,380.
"""

from __future__ import annotations

from typing import Any

from ccnn.models.ccnn import CCNN
from ccnn.models.pointcloud import PointCCNN
from ccnn.models.registry import MODELS

DEFAULT_OMEGA_0 = {1: 2976.49, 2: 2085.43, 3: 500.0}


def _ccnn_variant(
    num_blocks: int,
    hidden: int,
    kernel_hidden: int,
    in_channels: int,
    out_channels: int,
    data_dim: int = 1,
    *,
    omega_0: float | None = None,
    causal: bool | None = None,
    kernel_size: int | str | None = None,
    mask_init_value: float = 0.075,
    use_fft: bool | None = None,
    **overrides: Any,
) -> CCNN:
    causal = data_dim == 1 if causal is None else causal
    conv_kwargs = {
        "kernel_type": "MAGNet",
        "kernel_kwargs": {
            "hidden_channels": kernel_hidden,
            "num_layers": 3,
            "omega_0": omega_0 or DEFAULT_OMEGA_0[data_dim],
            "init": "ccnn",
        },
        "kernel_size": kernel_size or ("same" if data_dim == 1 else 33),
        "mask_type": "gaussian",
        "mask_kwargs": {"init_value": mask_init_value, "threshold": 0.1, "dynamic_cropping": True},
        "causal": causal,
        "use_fft": use_fft,
        "chang_initialize": True,
    }
    conv_kwargs.update(overrides.pop("conv_kwargs", {}))
    options: dict[str, Any] = {
        "hidden_channels": hidden,
        "num_blocks": num_blocks,
        "conv_type": "SeparableFlexConv",
        "block_type": "S4",
        "prenorm": True,
        "norm": "BatchNorm",
        "nonlinearity": "GELU",
        "dropout_type": "Dropout2d",
    }
    options.update(overrides)
    return CCNN(in_channels, out_channels, data_dim, conv_kwargs=conv_kwargs, **options)


@MODELS.register("ccnn_4_140")
def ccnn_4_140(in_channels: int, out_channels: int, data_dim: int = 1, **kwargs: Any) -> CCNN:
    """CCNN-4,140: 4 S4 blocks of width 140, MAGNet kernels with 32 hidden units
    (``kernel_hidden=`` overrides)."""
    hidden = kwargs.pop("kernel_hidden", 32)
    return _ccnn_variant(4, 140, hidden, in_channels, out_channels, data_dim, **kwargs)


@MODELS.register("ccnn_6_380")
def ccnn_6_380(in_channels: int, out_channels: int, data_dim: int = 1, **kwargs: Any) -> CCNN:
    """CCNN-6,380: 6 S4 blocks of width 380, MAGNet kernels with 64 hidden units
    (``kernel_hidden=`` overrides: the published ListOps command uses 32)."""
    hidden = kwargs.pop("kernel_hidden", 64)
    return _ccnn_variant(6, 380, hidden, in_channels, out_channels, data_dim, **kwargs)


@MODELS.register("ccnn")
def ccnn(in_channels: int, out_channels: int, data_dim: int = 1, **kwargs: Any) -> CCNN:
    """A CCNN with every option given explicitly (see :class:`ccnn.models.CCNN`)."""
    return CCNN(in_channels, out_channels, data_dim, **kwargs)


def _point_ccnn_variant(
    num_blocks: int,
    hidden: int,
    conv_type: str,
    num_neighbours: int,
    kernel_hidden: int,
    in_channels: int,
    out_channels: int,
    data_dim: int = 3,
    *,
    omega_0: float = 500.0,
    mask_init_value: float = 0.075,
    **overrides: Any,
) -> PointCCNN:
    conv_kwargs = {
        "num_neighbours": num_neighbours,
        "kernel_type": "MAGNet",
        "kernel_kwargs": {
            "hidden_channels": kernel_hidden,
            "num_layers": 3,
            "omega_0": omega_0,
            "init": "ccnn",
        },
        "mask_type": "gaussian",
        "mask_kwargs": {"init_value": mask_init_value},
        "chang_initialize": True,
    }
    conv_kwargs.update(overrides.pop("conv_kwargs", {}))
    options: dict[str, Any] = {
        "hidden_channels": hidden,
        "num_blocks": num_blocks,
        "conv_type": conv_type,
        "dropout_type": "Dropout2d",
    }
    options.update(overrides)
    return PointCCNN(
        in_channels, out_channels, conv_kwargs=conv_kwargs, data_dim=data_dim, **options
    )


@MODELS.register("point_ccnn_4_140")
def point_ccnn_4_140(in_channels: int = 6, out_channels: int = 40, **kwargs: Any) -> PointCCNN:
    """Point-cloud CCNN-4,140 (ModelNet40): SeparablePointFlexConv over 256 neighbours, MAGNet
    kernels with 32 hidden units (``kernel_hidden=``, ``num_neighbours=``, ``conv_type=``
    override)."""
    hidden = kwargs.pop("kernel_hidden", 32)
    neighbours = kwargs.pop("num_neighbours", 256)
    conv_type = kwargs.pop("conv_type", "SeparablePointFlexConv")
    return _point_ccnn_variant(
        4, 140, conv_type, neighbours, hidden, in_channels, out_channels, **kwargs
    )


@MODELS.register("point_ccnn_6_380")
def point_ccnn_6_380(in_channels: int = 6, out_channels: int = 40, **kwargs: Any) -> PointCCNN:
    """Point-cloud CCNN-6,380 (ModelNet40): SeparablePointFlexConvDist over 64 neighbours,
    MAGNet kernels with 64 hidden units (``kernel_hidden=``, ``num_neighbours=``, ``conv_type=``
    override: Figure 8 uses SeparablePointFlexConv)."""
    hidden = kwargs.pop("kernel_hidden", 64)
    neighbours = kwargs.pop("num_neighbours", 64)
    conv_type = kwargs.pop("conv_type", "SeparablePointFlexConvDist")
    return _point_ccnn_variant(
        6,
        380,
        conv_type,
        neighbours,
        hidden,
        in_channels,
        out_channels,
        **kwargs,
    )
