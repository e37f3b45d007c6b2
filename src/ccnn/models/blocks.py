"""Residual blocks shared by the CCNN and FlexNet networks (any conv type, any data_dim).

Legend: b batch · c channels · s spatial dims.

``conv_factory(in_channels, out_channels) -> nn.Module`` builds the block's convolutions, so the
same blocks serve continuous, discrete and point-cloud convolutions. Extra positional arguments
of ``forward`` (e.g. point-cloud neighbourhoods) are passed to every convolution; the keyword
arguments ``mask`` and ``times`` (series with unobserved steps or timestamps, see
:mod:`ccnn.nn.masking`) go to every convolution, and ``mask`` also to every BatchNorm, so that
unobserved steps never enter a statistic.

Registered in :data:`BLOCKS` (``net.block.type``):

* ``S4`` — the CCNN block. prenorm: ``Act(Linear(Dropout(Act(Conv(Norm(x)))))) + shortcut(x)``;
  postnorm: ``Norm(Act(Linear(Dropout(Act(Conv(x))))) + shortcut(x))``.
* ``default`` — ResNet basic block: ``Act(Norm(Conv(Dropout(Act(Norm(Conv(x)))))) + shortcut(x))``.
* ``PreActResNet`` — ``Conv(Dropout(Act(Norm(Conv(Act(Norm(x))))))) + shortcut(x)``.
* ``TCN`` — ``Act(Dropout(Act(Norm(Conv(Dropout(Act(Norm(Conv(x)))))))) + shortcut(x))``.

Shortcut: identity, or a 1x1 linear when the widths differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from ccnn.errors import OptionError
from ccnn.nn.layers import get_activation, get_dropout, get_norm, pointwise
from ccnn.nn.masking import apply_norm
from ccnn.registry import Registry

BLOCKS: Registry = Registry("block type")
ConvFactory = Callable[[int, int], nn.Module]


def _call(conv: nn.Module, x: torch.Tensor, ctx: tuple, seq: dict) -> torch.Tensor:
    return conv(x, *ctx, **seq)


def _norm(norm: nn.Module, x: torch.Tensor, seq: dict) -> torch.Tensor:
    return apply_norm(norm, x, seq.get("mask"))


class Block(nn.Module):
    """Base class; holds the shortcut and the common options.

    Args:
        in_channels, out_channels: block widths.
        conv_factory: builds a conv ``(c_in, c_out) -> module``.
        data_dim: spatial dims (for norms and 1x1 linears).
        norm, nonlinearity, dropout_type: names (``BatchNorm``, ``GELU``, ``Dropout2d``).
        dropout: dropout probability inside the block.
        prenorm: normalise before (True) or after (False) the residual sum (S4 block).
        linear_factory: builds 1x1 linears ``(c_in, c_out) -> module`` (default: pointwise conv).
        norm_factory: builds norms ``(c) -> module`` (default: ``get_norm(norm, c, data_dim)``).

    Shapes: ``(b, in_channels, *s) -> (b, out_channels, *s)``.
    """

    prenorm_stream: ClassVar[bool] = False
    """True for blocks whose ``prenorm=True`` leaves the residual stream unnormalised (the
    network then normalises the last block's output before its readout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        conv_factory: ConvFactory,
        data_dim: int,
        norm: str = "BatchNorm",
        nonlinearity: str = "GELU",
        dropout: float = 0.0,
        dropout_type: str = "Dropout",
        prenorm: bool = True,
        linear_factory: Callable[[int, int], nn.Module] | None = None,
        norm_factory: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        linear_factory = linear_factory or (lambda i, o: pointwise(i, o, data_dim))
        norm_factory = norm_factory or (lambda c: get_norm(norm, c, data_dim))
        self.nonlinearity, self.dropout_p, self.dropout_type = nonlinearity, dropout, dropout_type
        self.prenorm = prenorm
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else linear_factory(in_channels, out_channels)
        )
        self._build(in_channels, out_channels, conv_factory, linear_factory, norm_factory)

    def act(self) -> nn.Module:
        return get_activation(self.nonlinearity)

    def drop(self) -> nn.Module:
        return get_dropout(self.dropout_type, self.dropout_p)

    def _build(self, c_in, c_out, conv_factory, linear_factory, norm_factory) -> None:
        raise NotImplementedError


@BLOCKS.register("S4")
class S4Block(Block):
    """CCNN block (conv + pointwise linear, like the S4 block); see the module docstring."""

    prenorm_stream = True

    def _build(self, c_in, c_out, conv_factory, linear_factory, norm_factory) -> None:
        self.norm = norm_factory(c_in if self.prenorm else c_out)
        self.conv = conv_factory(c_in, c_out)
        self.act1, self.dropout, self.linear, self.act2 = (
            self.act(),
            self.drop(),
            linear_factory(c_out, c_out),
            self.act(),
        )

    def forward(self, x: torch.Tensor, *ctx, **seq) -> torch.Tensor:
        """Shapes: ``(b, c_in, *s) -> (b, c_out, *s)``."""
        shortcut = self.shortcut(x)
        h = _norm(self.norm, x, seq) if self.prenorm else x
        h = self.act2(self.linear(self.dropout(self.act1(_call(self.conv, h, ctx, seq)))))
        out = h + shortcut
        return out if self.prenorm else _norm(self.norm, out, seq)


@BLOCKS.register("default", "ResNet")
class ResNetBlock(Block):
    """ResNet basic block with two convolutions."""

    def _build(self, c_in, c_out, conv_factory, linear_factory, norm_factory) -> None:
        self.conv1, self.norm1, self.act1, self.dropout = (
            conv_factory(c_in, c_out),
            norm_factory(c_out),
            self.act(),
            self.drop(),
        )
        self.conv2, self.norm2, self.act2 = (
            conv_factory(c_out, c_out),
            norm_factory(c_out),
            self.act(),
        )

    def forward(self, x: torch.Tensor, *ctx, **seq) -> torch.Tensor:
        """Shapes: ``(b, c_in, *s) -> (b, c_out, *s)``."""
        h = self.dropout(self.act1(_norm(self.norm1, _call(self.conv1, x, ctx, seq), seq)))
        h = _norm(self.norm2, _call(self.conv2, h, ctx, seq), seq)
        return self.act2(h + self.shortcut(x))


@BLOCKS.register("PreActResNet")
class PreActResNetBlock(Block):
    """Pre-activation ResNet block."""

    def _build(self, c_in, c_out, conv_factory, linear_factory, norm_factory) -> None:
        self.norm1, self.act1, self.conv1 = (
            norm_factory(c_in),
            self.act(),
            conv_factory(c_in, c_out),
        )
        self.norm2, self.act2, self.dropout, self.conv2 = (
            norm_factory(c_out),
            self.act(),
            self.drop(),
            conv_factory(c_out, c_out),
        )

    def forward(self, x: torch.Tensor, *ctx, **seq) -> torch.Tensor:
        """Shapes: ``(b, c_in, *s) -> (b, c_out, *s)``."""
        h = _call(self.conv1, self.act1(_norm(self.norm1, x, seq)), ctx, seq)
        h = _call(self.conv2, self.dropout(self.act2(_norm(self.norm2, h, seq))), ctx, seq)
        return h + self.shortcut(x)


@BLOCKS.register("TCN")
class TCNBlock(Block):
    """Temporal-convolutional-network block (Bai et al., 2018) with norms instead of weight norm."""

    def _build(self, c_in, c_out, conv_factory, linear_factory, norm_factory) -> None:
        self.conv1, self.norm1, self.act1, self.drop1 = (
            conv_factory(c_in, c_out),
            norm_factory(c_out),
            self.act(),
            self.drop(),
        )
        self.conv2, self.norm2, self.act2, self.drop2 = (
            conv_factory(c_out, c_out),
            norm_factory(c_out),
            self.act(),
            self.drop(),
        )
        self.act_out = self.act()

    def forward(self, x: torch.Tensor, *ctx, **seq) -> torch.Tensor:
        """Shapes: ``(b, c_in, *s) -> (b, c_out, *s)``."""
        h = self.drop1(self.act1(_norm(self.norm1, _call(self.conv1, x, ctx, seq), seq)))
        h = self.drop2(self.act2(_norm(self.norm2, _call(self.conv2, h, ctx, seq), seq)))
        return self.act_out(h + self.shortcut(x))


def block_widths(
    hidden: int, num_blocks: int, factors: list[float] | tuple[float, ...]
) -> list[int]:
    """Widths of the blocks.

    ``factors`` is ``[0.0]`` (all blocks ``hidden`` wide; the CCNN default) or pairs
    ``[factor, count, factor, count, ...]`` (FlexNet): ``[1.0, 2, 1.5, 3, 2.0, 2]`` with
    hidden 24 gives 24, 24, 36, 36, 36, 48, 48.
    """
    factors = list(factors or [0.0])
    if factors == [0.0] or all(f == 0 for f in factors):
        return [hidden] * num_blocks
    if len(factors) % 2:
        raise OptionError(
            f"block_width_factors must be [0.0] or (factor, count) pairs, got {factors}"
        )
    widths: list[int] = []
    for factor, count in zip(factors[0::2], factors[1::2]):
        if count != int(count) or count < 0:
            raise OptionError(f"block_width_factors counts must be whole numbers, got {count}")
        widths += [int(hidden * factor)] * int(count)
    if len(widths) != num_blocks:
        raise OptionError(
            f"block_width_factors {factors} describe {len(widths)} blocks but no_blocks="
            f"{num_blocks}; make the counts add up to no_blocks"
        )
    return widths
