"""The point-cloud CCNN (Knigge, Romero et al., arXiv:2206.03398, ModelNet experiments).

Legend: b batch · c channels · n points · k neighbours.

Same residual structure as the sequence/image CCNN (:mod:`ccnn.models.ccnn`), on clouds stored
as dense ``(b, c, n)`` tensors whose channels 0-2 are the xyz positions::

    x (b, 6, n) -> kNN neighbourhood of p = x[:, :3] (computed ONCE, shared by all layers)
      -> Dropout(dropout_in) -> PointConv(6 -> hidden) -> BatchNorm1d -> GELU
      -> S4 block x num_blocks:  GELU(Linear(Dropout(GELU(PointConv(BN(h)))))) + h
      -> BatchNorm1d (prenorm) -> mean over points -> Linear(hidden -> classes)

Norms are graph-wise BatchNorm over ``(b, c, n)`` (``BatchNorm1d``), linears are pointwise, the
stem sees all input features (positions and normals). The published point-cloud block mutated its
input in place and returned ``2 f(x)`` instead of ``x + f(x)``; ours (the shared S4 block) adds
the shortcut.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ccnn.errors import OptionError
from ccnn.models.ccnn import CCNN
from ccnn.models.registry import MODELS
from ccnn.nn.pointconv import POINT_CONVS, build_neighbourhood, build_point_conv


@MODELS.register("point_ccnn")
class PointCCNN(CCNN):
    """Residual network of point convolutions for classification of point clouds.

    A :class:`~ccnn.models.ccnn.CCNN` whose convolutions are point convolutions sharing one
    kNN neighbourhood per forward, with norms/linears/dropout over ``(b, c, n)`` and a mean
    readout over points.

    Args:
        in_channels: input features per point (6: xyz + normals).
        out_channels: logits.
        hidden_channels, num_blocks: ``net.no_hidden``, ``net.no_blocks``.
        conv_type: a name in ``POINT_CONVS``.
        conv_kwargs: keyword arguments of the point conv (``num_neighbours``, ``kernel_type``,
            ``kernel_kwargs``, ``mask_type``, ``mask_kwargs``, ``bias``, ``chang_initialize``,
            ``bottleneck_factor``).
        block_type, prenorm, norm, nonlinearity, dropout, dropout_in, dropout_type,
            block_width_factors: as in :class:`ccnn.models.ccnn.CCNN` (norms and dropout act on
            ``(b, c, n)``; ``Dropout2d`` drops whole feature channels of a cloud).
        position_channels: the first this many input channels are the positions.
        data_dim: position dims.

    Shapes: ``(b, in_channels, n) -> (b, out_channels)``.
    """

    layout_dim = 1  # features are (b, c, n) whatever the position dims

    def __init__(
        self,
        in_channels: int = 6,
        out_channels: int = 40,
        hidden_channels: int = 140,
        num_blocks: int = 4,
        conv_type: str = "SeparablePointFlexConv",
        conv_kwargs: dict[str, Any] | None = None,
        block_type: str = "S4",
        prenorm: bool = True,
        norm: str = "BatchNorm",
        nonlinearity: str = "GELU",
        dropout: float = 0.0,
        dropout_in: float = 0.0,
        dropout_type: str = "Dropout",
        block_width_factors: Sequence[float] = (0.0,),
        position_channels: int = 3,
        data_dim: int = 3,
    ):
        if in_channels < position_channels:
            raise OptionError(
                f"inputs need at least {position_channels} channels (the positions), "
                f"got {in_channels}"
            )
        POINT_CONVS.get(conv_type)
        super().__init__(
            in_channels,
            out_channels,
            data_dim,
            hidden_channels=hidden_channels,
            num_blocks=num_blocks,
            conv_type=conv_type,
            conv_kwargs=conv_kwargs,
            block_type=block_type,
            prenorm=prenorm,
            norm=norm,
            nonlinearity=nonlinearity,
            dropout=dropout,
            dropout_in=dropout_in,
            dropout_type=dropout_type,
            block_width_factors=block_width_factors,
        )
        self.position_channels = position_channels
        self.num_neighbours = self.stem.num_neighbours

    def conv_factory(self, conv_type: str, conv_kwargs: dict[str, Any], data_dim: int):
        return lambda c_in, c_out: build_point_conv(conv_type, c_in, c_out, data_dim, **conv_kwargs)

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, c, n) -> (b, d, n)``."""
        return x[:, : self.position_channels]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-point features before the readout. Shapes: ``(b, c_in, n) -> (b, hidden, n)``."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise OptionError(
                f"PointCCNN expects clouds of shape (b, {self.in_channels}, n), "
                f"got {tuple(x.shape)}"
            )
        nbhd = build_neighbourhood(self.positions(x), self.num_neighbours)  # once per forward
        return super().features(x, nbhd)
