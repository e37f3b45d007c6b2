"""The Continuous CNN (CCNN; Knigge, Romero et al., arXiv:2206.03398) for sequences and images.

Legend: b batch · c channels · s spatial dims · l length.

Structure (``net.type=ResNet`` in the CCNN app)::

    x -> [Embedding] -> Dropout(dropout_in) -> Conv(in -> hidden) -> Norm -> Act
      -> Block x num_blocks (widths from block_width_factors; MaxPool after `downsampling`)
      -> Norm (prenorm blocks only) -> readout (mean over all positions, or last step)
      -> 1x1 Linear(hidden -> out)

Binary tasks use ``out_channels=1`` (one logit, BCE-with-logits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ccnn.models.blocks import BLOCKS, Block, block_widths
from ccnn.nn.conv import build_conv
from ccnn.nn.layers import get_activation, get_dropout, get_norm

READOUTS = ("mean", "last")


class CCNN(nn.Module):
    """Residual network of (continuous) convolutions for ``data_dim``-D inputs.

    This class is also the base of FlexNet/FlexTCN (:mod:`ccnn.models.flexnet`) and the
    point-cloud CCNN (:mod:`ccnn.models.pointcloud`), which change its defaults or how its
    convolutions are built.

    Args:
        in_channels: input channels (or the embedding width when ``vocab_size`` is set).
        out_channels: logits (classes, or 1 for binary tasks).
        data_dim: 1 (sequences), 2 (images) or 3 (volumes).
        hidden_channels: width of the stem and the blocks (``net.no_hidden``).
        num_blocks: number of residual blocks (``net.no_blocks``).
        conv_type: a name in ``ccnn.nn.CONVS`` (``SeparableFlexConv``, ``FlexConv``, ``CKConv``,
            ``Conv``, ...).
        conv_kwargs: keyword arguments of the conv (``kernel_type``, ``kernel_kwargs``,
            ``kernel_size``, ``mask_type``, ``mask_kwargs``, ``causal``, ``use_fft``, ``bias``,
            ``chang_initialize``).
        block_type: a name in ``BLOCKS`` (``S4``, ``default``, ``PreActResNet``, ``TCN``).
        prenorm: S4 block norm placement.
        norm, nonlinearity, dropout_type: torch.nn names (``BatchNorm``/``LayerNorm``, ``GELU``,
            ``Dropout2d``).
        dropout, dropout_in: dropout inside blocks and on the input.
        block_width_factors: ``[0.0]`` or (factor, count) pairs.
        downsampling: block indices after which a MaxPool halves the resolution.
        downsampling_size: pool size (default 2).
        readout: ``mean`` over all positions (the published behaviour, also for causal
            models), or ``last`` (the last time step; causal 1D models only).
        vocab_size: if set, inputs are token ids ``(b, 1, l)`` embedded into ``in_channels``
            channels by a learned embedding (an option for LRA text tasks).
        stem: start with a conv-norm-act stem (False: the first block maps ``in_channels``).

    Shapes: ``(b, in_channels, *s) -> (b, out_channels)``.
    """

    layout_dim: int | None = None
    """Spatial dims of the feature tensors for norms/pools/linears (None: ``data_dim``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        data_dim: int,
        hidden_channels: int = 140,
        num_blocks: int = 4,
        conv_type: str = "SeparableFlexConv",
        conv_kwargs: dict[str, Any] | None = None,
        block_type: str = "S4",
        prenorm: bool = True,
        norm: str = "BatchNorm",
        nonlinearity: str = "GELU",
        dropout: float = 0.0,
        dropout_in: float = 0.0,
        dropout_type: str = "Dropout2d",
        block_width_factors: Sequence[float] = (0.0,),
        downsampling: Sequence[int] = (),
        downsampling_size: int = -1,
        readout: str = "mean",
        vocab_size: int | None = None,
        stem: bool = True,
    ):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"Unknown readout '{readout}'; supported: {list(READOUTS)}")
        conv_kwargs = dict(conv_kwargs or {})
        if readout == "last" and not (data_dim == 1 and conv_kwargs.get("causal")):
            raise ValueError("readout='last' needs a causal 1D model (conv.causal=True, 1D data)")
        if hidden_channels < 1 or num_blocks < 0:
            raise ValueError(
                "hidden_channels must be >= 1 and num_blocks >= 0 (net.no_hidden, "
                f"net.no_blocks), got {hidden_channels}, {num_blocks}"
            )
        block_cls = BLOCKS.get(block_type)
        layout = self.layout_dim or data_dim
        self.in_channels, self.out_channels, self.data_dim = in_channels, out_channels, data_dim
        self.readout, self.prenorm_output = readout, block_cls.__name__ == "S4Block" and prenorm
        self.embedding = nn.Embedding(vocab_size, in_channels) if vocab_size else None
        conv_factory = self.conv_factory(conv_type, conv_kwargs, data_dim)

        self.dropout_in = get_dropout("Dropout", dropout_in)
        c_in = in_channels
        if stem:
            self.stem = conv_factory(in_channels, hidden_channels)
            self.stem_norm = get_norm(norm, hidden_channels, layout)
            self.stem_act = get_activation(nonlinearity)
            c_in = hidden_channels
        else:
            self.stem = None

        widths = block_widths(hidden_channels, num_blocks, block_width_factors)
        pool_cls = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[layout]
        pool_size = downsampling_size if downsampling_size and downsampling_size > 0 else 2
        for i in downsampling:
            if not 0 <= i < num_blocks:
                raise ValueError(
                    f"net.downsampling index {i} is not a block index (0..{num_blocks - 1})"
                )
        blocks: list[nn.Module] = []
        for i, c_out in enumerate(widths):
            blocks.append(
                block_cls(
                    c_in,
                    c_out,
                    conv_factory,
                    layout,
                    norm=norm,
                    nonlinearity=nonlinearity,
                    dropout=dropout,
                    dropout_type=dropout_type,
                    prenorm=prenorm,
                )
            )
            if i in downsampling:
                blocks.append(pool_cls(pool_size))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out_norm = get_norm(norm, c_in, layout) if self.prenorm_output else nn.Identity()
        self.out_linear = nn.Linear(c_in, out_channels)
        nn.init.kaiming_normal_(self.out_linear.weight)
        nn.init.zeros_(self.out_linear.bias)

    def conv_factory(
        self, conv_type: str, conv_kwargs: dict[str, Any], data_dim: int
    ) -> Callable[[int, int], nn.Module]:
        """How the network builds a convolution ``(c_in, c_out) -> module``."""
        return lambda c_in, c_out: build_conv(conv_type, c_in, c_out, data_dim, **conv_kwargs)

    def features(self, x: torch.Tensor, *ctx: Any) -> torch.Tensor:
        """Shapes: ``(b, c_in, *s) -> (b, c, *s')``. ``ctx`` is passed to every convolution."""
        if self.embedding is not None:
            if x.dim() != 3 or x.shape[1] != 1:
                raise ValueError(f"token inputs must be (b, 1, l), got {tuple(x.shape)}")
            x = self.embedding(x[:, 0].long()).transpose(1, 2)  # (b, c, l)
        x = self.dropout_in(x)
        if self.stem is not None:
            x = self.stem_act(self.stem_norm(self.stem(x, *ctx)))
        for block in self.blocks:
            x = block(x, *ctx) if isinstance(block, Block) else block(x)
        return self.out_norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, c_in, *s) -> (b, out_channels)``."""
        h = self.features(x)
        h = h[..., -1] if self.readout == "last" else h.flatten(2).mean(-1)  # (b, c)
        return self.out_linear(h)
