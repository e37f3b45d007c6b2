"""FlexNet and FlexTCN (Romero, Bruintjes et al., FlexConv, arXiv:2110.08059, Fig. 10).

Legend: b batch · c channels · s spatial dims · l length.

FlexNet (``net.type=ResNet`` in the FlexConv app) — no pooling, no stride::

    x -> Dropout(dropout_in) -> Conv(in -> hidden) -> Norm -> Act
      -> ResNetBlock x num_blocks (widths from block_width_factors)
      -> global average pool (or the last step, ``readout="last"``) -> Linear(c -> out)

ResNetBlock (``BLOCKS["default"]``): ``Act(Norm(Conv(Dropout(Act(Norm(Conv(x)))))) + sc(x))``
with ``sc`` the identity or, where the width changes, a 1x1 convolution with bias.

FlexTCN (``net.type=TCN``): causal TCN blocks (``BLOCKS["TCN"]``; the first block maps the
input channels to the first width, there is no stem) and a linear head on the LAST time step.

FlexNet-7 on CIFAR-10 (:func:`flexnet_7`) has 671,650 parameters. A dense 2D FlexConv(C_in→C_out)
with a 32×3 MAGNet holds 4,068 + 33·C_in·C_out + C_out parameters (MAGNet body 4,064; output
linear 32→C_in·C_out with bias; mask mean and σ per dim, 4; conv bias C_out)::

    stem FlexConv(3→24) 6,468 + BN 48                                   6,516
    2 × block 24→24: 2 × (23,100 + BN 48)                            2 × 46,296
    block 24→36: 32,616 + 72 + 46,872 + 72 + 1x1 shortcut 900           80,532
    2 × block 36→36: 2 × (46,872 + 72)                               2 × 93,888
    block 36→48: 61,140 + 96 + 80,148 + 96 + 1x1 shortcut 1,776        143,256
    block 48→48: 2 × (80,148 + 96)                                     160,488
    head Linear(48→10)                                                     490
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ccnn.models.blocks import BLOCKS, block_widths
from ccnn.models.registry import MODELS
from ccnn.nn.conv import build_conv
from ccnn.nn.layers import get_activation, get_dropout, get_norm

READOUTS = ("mean", "last")


def _check_sizes(hidden_channels: int, num_blocks: int) -> None:
    if hidden_channels < 1 or num_blocks < 0:
        raise ValueError(
            f"hidden_channels must be >= 1 and num_blocks >= 0 (net.no_hidden, net.no_blocks), "
            f"got {hidden_channels}, {num_blocks}"
        )


class FlexNet(nn.Module):
    """Residual FlexConv network without pooling or strides (FlexConv paper, Fig. 10).

    Args:
        in_channels, out_channels: input channels and logits.
        data_dim: 1, 2 or 3 spatial dims.
        hidden_channels: width of the stem (``net.no_hidden``); blocks are scaled from it.
        num_blocks: residual blocks (``net.no_blocks``).
        block_width_factors: ``(0.0,)`` (all blocks ``hidden_channels`` wide) or
            ``(factor, count, ...)`` pairs, e.g. ``[1.0, 2, 1.5, 3, 2.0, 2]``.
        conv_type: a name in ``ccnn.nn.CONVS`` (``FlexConv``, ``CKConv``, ``Conv``, ``SRF``...).
        conv_kwargs: keyword arguments of every convolution (``kernel_type``, ``kernel_size``,
            ``kernel_kwargs``, ``mask_type``, ``mask_kwargs``, ...).
        norm, nonlinearity: names (``BatchNorm``/``LayerNorm``; ``ReLU``...).
        dropout: dropout after the first activation of each block.
        dropout_in: dropout on the input.
        dropout_type: torch.nn dropout class name used inside the blocks.
        readout: ``mean`` (global average pool) or ``last`` (last step; causal 1D only).

    Shapes: ``(b, in_channels, *s) -> (b, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        data_dim: int = 2,
        hidden_channels: int = 24,
        num_blocks: int = 7,
        block_width_factors: Sequence[float] = (0.0,),
        conv_type: str = "FlexConv",
        conv_kwargs: dict[str, Any] | None = None,
        norm: str = "BatchNorm",
        nonlinearity: str = "ReLU",
        dropout: float = 0.0,
        dropout_in: float = 0.0,
        dropout_type: str = "Dropout",
        readout: str = "mean",
    ):
        super().__init__()
        _check_sizes(hidden_channels, num_blocks)
        if readout not in READOUTS:
            raise ValueError(f"Unknown readout '{readout}'; supported: {list(READOUTS)}")
        conv_kwargs = dict(conv_kwargs or {})
        if readout == "last" and not (data_dim == 1 and conv_kwargs.get("causal")):
            raise ValueError("readout='last' needs a causal 1D model (causal=True, data_dim=1)")
        self.in_channels, self.out_channels, self.data_dim = in_channels, out_channels, data_dim
        self.readout = readout

        def conv_factory(c_in: int, c_out: int) -> nn.Module:
            return build_conv(conv_type, c_in, c_out, data_dim, **conv_kwargs)

        self.dropout_in = get_dropout("Dropout", dropout_in)
        self.stem = conv_factory(in_channels, hidden_channels)
        self.stem_norm = get_norm(norm, hidden_channels, data_dim)
        self.stem_act = get_activation(nonlinearity)

        block_cls = BLOCKS.get("default")
        blocks: list[nn.Module] = []
        c_in = hidden_channels
        for c_out in block_widths(hidden_channels, num_blocks, block_width_factors):
            blocks.append(
                block_cls(
                    c_in,
                    c_out,
                    conv_factory,
                    data_dim,
                    norm=norm,
                    nonlinearity=nonlinearity,
                    dropout=dropout,
                    dropout_type=dropout_type,
                )
            )
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out_linear = nn.Linear(c_in, out_channels)
        nn.init.kaiming_normal_(self.out_linear.weight)
        nn.init.zeros_(self.out_linear.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, in_channels, *s) -> (b, c, *s)``."""
        x = self.stem_act(self.stem_norm(self.stem(self.dropout_in(x))))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, in_channels, *s) -> (b, out_channels)``."""
        h = self.features(x)
        h = h[..., -1] if self.readout == "last" else h.flatten(2).mean(-1)  # (b, c)
        return self.out_linear(h)


class FlexTCN(nn.Module):
    """Temporal convolutional network of causal (Flex)Convs with a head on the last step.

    Args: as :class:`FlexNet` (``data_dim`` must be 1). The convolutions are forced causal
    (``conv_kwargs["causal"]=True``; passing ``causal=False`` is an error). There is no stem:
    the first TCN block maps ``in_channels`` to the first block width. The head is a linear
    layer on the last time step, initialised N(0, 0.01²) with zero bias.

    Shapes: ``(b, in_channels, l) -> (b, out_channels)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        data_dim: int = 1,
        hidden_channels: int = 24,
        num_blocks: int = 2,
        conv_type: str = "FlexConv",
        conv_kwargs: dict[str, Any] | None = None,
        norm: str = "BatchNorm",
        nonlinearity: str = "ReLU",
        dropout: float = 0.0,
        dropout_in: float = 0.0,
        block_width_factors: Sequence[float] = (0.0,),
        dropout_type: str = "Dropout",
    ):
        super().__init__()
        _check_sizes(hidden_channels, num_blocks)
        if num_blocks < 1:
            raise ValueError("FlexTCN needs at least one block (net.no_blocks >= 1)")
        if data_dim != 1:
            raise ValueError(f"FlexTCN is a sequence model (data_dim=1), got data_dim={data_dim}")
        conv_kwargs = dict(conv_kwargs or {})
        if conv_kwargs.get("causal") is False:
            raise ValueError("FlexTCN uses causal convolutions; do not pass causal=False")
        conv_kwargs["causal"] = True
        self.in_channels, self.out_channels, self.data_dim = in_channels, out_channels, data_dim

        def conv_factory(c_in: int, c_out: int) -> nn.Module:
            return build_conv(conv_type, c_in, c_out, data_dim, **conv_kwargs)

        self.dropout_in = get_dropout("Dropout", dropout_in)
        block_cls = BLOCKS.get("TCN")
        blocks: list[nn.Module] = []
        c_in = in_channels
        for c_out in block_widths(hidden_channels, num_blocks, block_width_factors):
            blocks.append(
                block_cls(
                    c_in,
                    c_out,
                    conv_factory,
                    data_dim,
                    norm=norm,
                    nonlinearity=nonlinearity,
                    dropout=dropout,
                    dropout_type=dropout_type,
                )
            )
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.out_linear = nn.Linear(c_in, out_channels)
        nn.init.normal_(self.out_linear.weight, mean=0.0, std=0.01)
        nn.init.zeros_(self.out_linear.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, in_channels, l) -> (b, c, l)``."""
        x = self.dropout_in(x)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, in_channels, l) -> (b, out_channels)``."""
        return self.out_linear(self.features(x)[..., -1])  # (b, c) -> (b, out)


def flexnet_7_conv_kwargs(kernel_size: int | str = 33) -> dict[str, Any]:
    """The FlexConv options of the FlexNet-7 CIFAR-10 command (first command of seed 001).

    MAGNet 32×3 with the FlexConv initialisation (input_scale 25.6), a Gaussian mask with
    learned mean and σ (init 0.075, threshold 0.1, dynamic cropping), no Chang init (the
    published FlexConv code has none).
    """
    return {
        "kernel_type": "MAGNet",
        "kernel_size": kernel_size,
        "kernel_kwargs": {
            "hidden_channels": 32,
            "num_layers": 3,
            "input_scale": 25.6,
            "init": "flexconv",
        },
        "mask_type": "gaussian",
        "mask_kwargs": {
            "init_value": 0.075,
            "threshold": 0.1,
            "dynamic_cropping": True,
            "learn_mean": True,
        },
        "chang_initialize": False,
    }


@MODELS.register("flexnet")
def flexnet(in_channels: int, out_channels: int, data_dim: int = 2, **kwargs: Any) -> FlexNet:
    """A FlexNet with every option given explicitly (see :class:`FlexNet`)."""
    return FlexNet(in_channels, out_channels, data_dim, **kwargs)


@MODELS.register("flexnet_7")
def flexnet_7(
    in_channels: int = 3, out_channels: int = 10, data_dim: int = 2, **overrides: Any
) -> FlexNet:
    """FlexNet-7 of the CIFAR-10 command: FlexConv (33×33 grid), 7 blocks 24,24,36,36,36,48,48,
    dropout 0.2, BatchNorm, ReLU. ``conv_kwargs`` entries in ``overrides`` update the defaults."""
    conv_kwargs = flexnet_7_conv_kwargs()
    conv_kwargs.update(overrides.pop("conv_kwargs", None) or {})
    options: dict[str, Any] = {
        "hidden_channels": 24,
        "num_blocks": 7,
        "block_width_factors": (1.0, 2, 1.5, 3, 2.0, 2),
        "conv_type": "FlexConv",
        "norm": "BatchNorm",
        "nonlinearity": "ReLU",
        "dropout": 0.2,
        "dropout_in": 0.0,
    }
    options.update(overrides)
    return FlexNet(in_channels, out_channels, data_dim, conv_kwargs=conv_kwargs, **options)


@MODELS.register("flextcn")
def flextcn(in_channels: int, out_channels: int, data_dim: int = 1, **kwargs: Any) -> FlexTCN:
    """A FlexTCN with every option given explicitly (see :class:`FlexTCN`)."""
    return FlexTCN(in_channels, out_channels, data_dim, **kwargs)
