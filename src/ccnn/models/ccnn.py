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
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ccnn.errors import OptionError
from ccnn.models.blocks import BLOCKS, Block, block_widths
from ccnn.nn.conv import ContinuousConv, build_conv
from ccnn.nn.layers import get_activation, get_dropout, get_norm
from ccnn.nn.masking import (
    apply_norm,
    check_mask,
    gap_weights,
    last_observed,
    masked_mean,
    missing_fraction,
    time_span,
    to_grid,
)
from ccnn.nn.resolution import at_resolution

READOUTS = ("mean", "last")
TIME_PATHS = ("grid", "direct")


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
        stem_conv_type: the stem's conv type if not ``conv_type`` (same ``conv_kwargs``), e.g.
            ``FlexConv``: one kernel per output channel, where a separable stem on a univariate
            input would learn a single kernel.
        time_path: how series given with ``times`` are convolved: ``grid`` (observations placed
            on a grid of step ``1 / time_resolution``, then FFT/direct convolutions; fast) or
            ``direct`` (the kernel evaluated pair by pair at the true time differences; the
            reference, O(n^2) memory). Both agree exactly when the times lie on the grid.
        time_resolution: grid points per time unit for ``time_path="grid"``.
        gap_weights: with unobserved steps between observations (missing values, dropped
            steps, irregular times), weight each observation in every convolution by the time
            it stands for (:func:`ccnn.nn.masking.gap_weights`), so a convolution approximates
            the same integral however densely a stretch of the series is sampled. ``False``:
            every observation counts once, as if the gaps were zeros. Fully observed series
            (also padded ones) are unaffected: all their weights are 1.
        observation_dropout: training only, 1D series: hide each observed step with this
            probability (a series keeps at least two), so that the features cannot depend on
            which steps of a series happen to be observed — with a fixed sampling pattern per
            series a small training set is otherwise memorised by its gaps. ``-1`` (auto): the
            fraction of steps missing inside the batch's series
            (:func:`ccnn.nn.masking.missing_fraction`); 0 for fully observed series.

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
        stem_conv_type: str | None = None,
        time_path: str = "grid",
        time_resolution: int = 1,
        gap_weights: bool = True,
        observation_dropout: float = 0.0,
    ):
        super().__init__()
        if readout not in READOUTS:
            raise OptionError(f"Unknown readout '{readout}'; supported: {list(READOUTS)}")
        if time_path not in TIME_PATHS:
            raise OptionError(f"Unknown time_path '{time_path}'; supported: {list(TIME_PATHS)}")
        if int(time_resolution) != time_resolution or time_resolution < 1:
            raise OptionError(f"time_resolution must be a positive integer, got {time_resolution}")
        self.time_path, self.time_resolution = time_path, int(time_resolution)
        self.gap_weights = bool(gap_weights)
        if not (observation_dropout == -1 or 0 <= observation_dropout < 1):
            raise OptionError(
                f"observation_dropout must be in [0, 1) or -1 (auto), got {observation_dropout}"
            )
        if observation_dropout != 0 and data_dim != 1:
            raise OptionError("observation_dropout needs 1D series (data_dim=1)")
        self.observation_dropout = float(observation_dropout)
        conv_kwargs = dict(conv_kwargs or {})
        if readout == "last" and not (data_dim == 1 and conv_kwargs.get("causal")):
            raise OptionError("readout='last' needs a causal 1D model (conv.causal=True, 1D data)")
        if hidden_channels < 1 or num_blocks < 0:
            raise OptionError(
                "hidden_channels must be >= 1 and num_blocks >= 0 (net.no_hidden, "
                f"net.no_blocks), got {hidden_channels}, {num_blocks}"
            )
        block_cls = BLOCKS.get(block_type)
        layout = self.layout_dim or data_dim
        self.in_channels, self.out_channels, self.data_dim = in_channels, out_channels, data_dim
        self.readout, self.prenorm_output = readout, block_cls.prenorm_stream and prenorm
        self.embedding = nn.Embedding(vocab_size, in_channels) if vocab_size else None
        conv_factory = self.conv_factory(conv_type, conv_kwargs, data_dim)

        self.dropout_in = get_dropout("Dropout", dropout_in)
        c_in = in_channels
        if stem:
            stem_factory = (
                self.conv_factory(stem_conv_type, conv_kwargs, data_dim)
                if stem_conv_type
                else conv_factory
            )
            self.stem = stem_factory(in_channels, hidden_channels)
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
                raise OptionError(
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

    def features(self, x: torch.Tensor, *ctx: Any, **seq: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, c_in, *s) -> (b, c, *s')``. ``ctx`` is passed to every convolution;
        ``seq`` (``mask``, ``times``) to every convolution and norm (see :meth:`forward`)."""
        if self.embedding is not None:
            if x.dim() != 3 or x.shape[1] != 1:
                raise OptionError(f"token inputs must be (b, 1, l), got {tuple(x.shape)}")
            x = self.embedding(x[:, 0].long()).transpose(1, 2)  # (b, c, l)
        if seq and any(not isinstance(b, Block) for b in self.blocks):
            raise OptionError(
                "net.downsampling (MaxPool) cannot be combined with padded or irregular series; "
                "remove net.downsampling or give equal-length, fully observed inputs"
            )
        mask = seq.get("mask")
        x = self.dropout_in(x)
        if self.stem is not None:
            x = self.stem_act(apply_norm(self.stem_norm, self.stem(x, *ctx, **seq), mask))
        for block in self.blocks:
            x = block(x, *ctx, **seq) if isinstance(block, Block) else block(x)
        return apply_norm(self.out_norm, x, mask)

    def extra_repr(self) -> str:
        return (
            f"readout={self.readout}, time_path={self.time_path}, "
            f"time_resolution={self.time_resolution}, gap_weights={self.gap_weights}, "
            f"observation_dropout={self.observation_dropout}"
        )

    def _hide_observations(self, x: torch.Tensor, seq: dict, times) -> None:
        """Training augmentation (``observation_dropout``): hide random observed steps."""
        mask = seq.get("mask")
        if mask is None and times is None and self.observation_dropout < 0:
            return  # fully observed on the grid: nothing missing to imitate
        base = mask if mask is not None else torch.ones(x.shape[0], x.shape[-1]).to(x)
        p = self.observation_dropout
        if p < 0:
            p = float(missing_fraction(base, times))
        if p <= 0:
            return
        hidden = base * (torch.rand(base.shape, device=base.device) >= p).to(base.dtype)
        # a series left with fewer than two observations keeps all of its own
        seq["mask"] = torch.where(hidden.sum(-1, keepdim=True) >= 2, hidden, base)

    def _add_gap_weights(self, seq: dict, times=None, step: float = 1.0) -> None:
        """``seq["weights"]``: each observation's quadrature weight (see ``gap_weights``)."""
        mask = seq.get("mask")
        if mask is None and times is not None:
            mask = torch.ones_like(times)
        if self.gap_weights and mask is not None:
            seq["weights"] = gap_weights(mask, times, step)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        times: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits for ``x``; series with unobserved steps or timestamps are handled exactly.

        Args:
            x: ``(b, c_in, *s)``; or, for 1D series, ``(b, c_in, l)`` on a regular grid with
                ``mask``, or ``(b, c_in, n)`` observations at ``times``.
            mask: ``(b, l)`` (or ``(b, n)``): 1 observed, 0 padding or missing. Unobserved steps
                never reach a convolution, a BatchNorm statistic or the readout, so padding a
                series by any number of steps does not change its logits.
            times: ``(b, n)`` observation times in units of the training grid step (e.g. the
                original step index of each kept observation). The kernels are evaluated at the
                true time differences: on a grid of step ``1 / time_resolution`` (the default
                fast path) or pair by pair (``time_path="direct"``, the reference).

        Shapes: ``(b, c_in, *s) -> (b, out_channels)``.
        """
        seq: dict[str, torch.Tensor] = {}
        if mask is not None:
            seq["mask"] = check_mask(x, mask)
        if self.training and self.observation_dropout != 0:
            self._hide_observations(x, seq, times)
        if times is not None:
            if x.dim() != 3 or times.shape != (x.shape[0], x.shape[-1]):
                raise OptionError(
                    f"times must have shape (b, n) = {(x.shape[0], x.shape[-1])} for inputs "
                    f"(b, c, n); got times {tuple(times.shape)}, inputs {tuple(x.shape)}"
                )
            span = time_span(times, seq.get("mask"))
            for conv in self.modules():
                if isinstance(conv, ContinuousConv) and int(conv.grid_size[0]) == 0:
                    conv.init_time_grid(span)
            if self.time_path == "grid":
                x, seq["mask"], _ = to_grid(x, times, seq.get("mask"), self.time_resolution)
                self._add_gap_weights(seq, step=1.0 / self.time_resolution)
                # observations on an r-times finer grid each count once: no amplitude rescaling
                finer = (
                    at_resolution(self, self.time_resolution, rescale_amplitude=False)
                    if self.time_resolution > 1
                    else nullcontext()
                )
                with finer:
                    h = self.features(x, **seq)
            else:
                self._add_gap_weights(seq, times=times)
                seq["times"] = times
                h = self.features(x, **seq)
        else:
            self._add_gap_weights(seq)
            h = self.features(x, **seq)
        mask = seq.get("mask")
        if self.readout == "last":
            h = h[..., -1] if mask is None else last_observed(h, mask)  # (b, c)
        elif mask is None:
            h = h.flatten(2).mean(-1)  # (b, c)
        else:
            h = masked_mean(h, mask)  # (b, c)
        return self.out_linear(h)
