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
from torch import nn

from ccnn.models.blocks import BLOCKS, block_widths
from ccnn.nn.layers import get_activation, get_dropout, get_norm
from ccnn.nn.pointconv import POINT_CONVS, build_neighbourhood, build_point_conv


class PointCCNN(nn.Module):
    """Residual network of point convolutions for classification of point clouds.

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
        super().__init__()
        if hidden_channels < 1 or num_blocks < 0:
            raise ValueError(
                f"hidden_channels must be >= 1 and num_blocks >= 0 (net.no_hidden, net.no_blocks), "
                f"got {hidden_channels}, {num_blocks}"
            )
        if in_channels < position_channels:
            raise ValueError(
                f"inputs need at least {position_channels} channels (the positions), "
                f"got {in_channels}"
            )
        POINT_CONVS.get(conv_type)
        block_cls = BLOCKS.get(block_type)
        conv_kwargs = dict(conv_kwargs or {})
        self.in_channels, self.out_channels = in_channels, out_channels
        self.position_channels, self.data_dim = position_channels, data_dim
        self.prenorm_output = block_cls.__name__ == "S4Block" and prenorm

        def conv_factory(c_in: int, c_out: int) -> nn.Module:
            return build_point_conv(conv_type, c_in, c_out, data_dim, **conv_kwargs)

        self.dropout_in = get_dropout("Dropout", dropout_in)
        self.stem = conv_factory(in_channels, hidden_channels)
        self.num_neighbours = self.stem.num_neighbours
        self.stem_norm = get_norm(norm, hidden_channels, 1)
        self.stem_act = get_activation(nonlinearity)
        widths = block_widths(hidden_channels, num_blocks, block_width_factors)
        blocks, c_in = [], hidden_channels
        for c_out in widths:
            blocks.append(
                block_cls(
                    c_in,
                    c_out,
                    conv_factory,
                    1,
                    norm=norm,
                    nonlinearity=nonlinearity,
                    dropout=dropout,
                    dropout_type=dropout_type,
                    prenorm=prenorm,
                )
            )
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out_norm = get_norm(norm, c_in, 1) if self.prenorm_output else nn.Identity()
        self.out_linear = nn.Linear(c_in, out_channels)
        nn.init.kaiming_normal_(self.out_linear.weight)
        nn.init.zeros_(self.out_linear.bias)

    def positions(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, c, n) -> (b, d, n)``."""
        return x[:, : self.position_channels]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-point features before the readout. Shapes: ``(b, c_in, n) -> (b, hidden, n)``."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PointCCNN expects clouds of shape (b, {self.in_channels}, n), "
                f"got {tuple(x.shape)}"
            )
        nbhd = build_neighbourhood(self.positions(x), self.num_neighbours)  # once per forward
        h = self.stem_act(self.stem_norm(self.stem(self.dropout_in(x), nbhd)))  # (b, c, n)
        for block in self.blocks:
            h = block(h, nbhd)
        return self.out_norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, c_in, n) -> (b, out_channels)``."""
        return self.out_linear(self.features(x).mean(-1))  # (b, out)
