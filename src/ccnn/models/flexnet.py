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

from torch import nn

from ccnn.errors import OptionError
from ccnn.models.ccnn import CCNN
from ccnn.models.registry import MODELS


class FlexNet(CCNN):
    """Residual FlexConv network without pooling or strides (FlexConv paper, Fig. 10).

    A :class:`~ccnn.models.ccnn.CCNN` with ResNet blocks (``block_type="default"``: conv-norm-
    act-dropout-conv-norm + shortcut, act; 1x1 shortcut with bias where widths change), ReLU,
    plain dropout, global average pooling and a 1x1 linear head.

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
        super().__init__(
            in_channels,
            out_channels,
            data_dim,
            hidden_channels=hidden_channels,
            num_blocks=num_blocks,
            conv_type=conv_type,
            conv_kwargs=conv_kwargs,
            block_type="default",
            norm=norm,
            nonlinearity=nonlinearity,
            dropout=dropout,
            dropout_in=dropout_in,
            dropout_type=dropout_type,
            block_width_factors=block_width_factors,
            readout=readout,
        )


class FlexTCN(CCNN):
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
        if num_blocks < 1:
            raise OptionError("FlexTCN needs at least one block (net.no_blocks >= 1)")
        if data_dim != 1:
            raise OptionError(f"FlexTCN is a sequence model (data_dim=1), got data_dim={data_dim}")
        conv_kwargs = dict(conv_kwargs or {})
        if conv_kwargs.get("causal") is False:
            raise OptionError("FlexTCN uses causal convolutions; do not pass causal=False")
        conv_kwargs["causal"] = True
        super().__init__(
            in_channels,
            out_channels,
            data_dim,
            hidden_channels=hidden_channels,
            num_blocks=num_blocks,
            conv_type=conv_type,
            conv_kwargs=conv_kwargs,
            block_type="TCN",
            norm=norm,
            nonlinearity=nonlinearity,
            dropout=dropout,
            dropout_in=dropout_in,
            dropout_type=dropout_type,
            block_width_factors=block_width_factors,
            readout="last",
            stem=False,
        )
        nn.init.normal_(self.out_linear.weight, mean=0.0, std=0.01)


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
