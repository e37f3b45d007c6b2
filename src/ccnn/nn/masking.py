"""Sequences with unobserved steps: padding, missing values and irregular timestamps.

Legend: b batch · c channels · l steps (grid positions) · n observations per series.

Two equivalent ways to hand a network series that are not all observed on one full grid:

* **on a grid with an observation mask** — values ``(b, c, l)`` and ``mask (b, l)``, 1 where a
  step was observed, 0 where it is padding (unequal lengths) or missing. Every layer excludes
  the unobserved steps exactly: convolutions see zeros there (so the output at an observed step
  is the sum over observed steps only), BatchNorm takes its statistics over observed steps only,
  and the readout averages (or takes the last of) observed steps. Padding a series with any
  number of steps therefore never changes its prediction.
* **with timestamps** — values ``(b, c, n)``, their times ``(b, n)`` (in units of the sampling
  step the kernels were trained with) and ``mask (b, n)`` (0 for padding). A continuous kernel is
  evaluated at the true time differences ``t_j - t_i`` (the direct path of
  :class:`ccnn.nn.ContinuousConv`), or the observations are placed on a grid of step
  ``1 / resolution`` (:func:`to_grid`) and the grid path above runs; both agree exactly when the
  times lie on that grid.

The published CKConv/FlexConv code zero-fills missing steps and appends the mask as an input
channel instead; all steps then flow through every layer. That encoding is still available in the
UEA loader (``pad_mode=mask``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ccnn.errors import OptionError
from ccnn.nn.batchnorm import batch_norm


def check_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as a float tensor of shape ``(b, l)`` matching ``x (b, c, l)``."""
    if x.dim() != 3:
        raise OptionError(
            f"an observation mask needs sequences (b, c, l); got input {tuple(x.shape)}"
        )
    if mask.shape != (x.shape[0], x.shape[-1]):
        raise OptionError(
            f"mask must have shape (b, l) = {(x.shape[0], x.shape[-1])}, got {tuple(mask.shape)}"
        )
    return mask.to(dtype=x.dtype)


def masked_batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, mask: torch.Tensor):
    """BatchNorm of ``x (b, c, l)`` whose training statistics use observed steps only (over all
    processes when training with several; :func:`ccnn.nn.batchnorm.batch_norm`).

    Equals ``norm(x)`` when every step is observed (running statistics are updated the same way:
    momentum, unbiased variance). In eval mode the running statistics are used, as usual.

    Shapes: ``(b, c, l), (b, l) -> (b, c, l)``.
    """
    return batch_norm(norm, x, mask)


def apply_norm(norm: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``norm(x)``, with BatchNorm statistics over observed steps when ``mask`` is given.

    Norms that act on each position separately (channel LayerNorm, Identity) need no mask;
    norms that pool over positions other than BatchNorm are rejected.
    """
    if mask is None:
        return norm(x)
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        return masked_batch_norm(norm, x, mask)
    if isinstance(norm, nn.GroupNorm):
        raise OptionError(
            "GroupNorm pools over positions and cannot exclude padded steps; use "
            "net.norm=BatchNorm or LayerNorm for series of unequal length"
        )
    return norm(x)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over observed steps. Shapes: ``(b, c, l), (b, l) -> (b, c)``."""
    m = mask[:, None]
    return (x * m).sum(-1) / m.sum(-1).clamp_min(1.0)


def last_observed(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Value at each series' last observed step. Shapes: ``(b, c, l), (b, l) -> (b, c)``."""
    steps = torch.arange(x.shape[-1], device=x.device)
    last = torch.where(mask > 0, steps, -1).amax(-1).clamp_min(0)  # (b,)
    return x.gather(-1, last[:, None, None].expand(-1, x.shape[1], 1))[..., 0]


def time_span(times: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Largest ``max t - min t`` over the observed points of any series of the batch."""
    if mask is None:
        return float((times.amax(-1) - times.amin(-1)).max())
    valid = mask > 0
    hi = torch.where(valid, times, -torch.inf).amax(-1)
    lo = torch.where(valid, times, torch.inf).amin(-1)
    span = torch.where(valid.any(-1), hi - lo, torch.zeros_like(hi))
    return float(span.max())


def _positions(mask: torch.Tensor, times: torch.Tensor | None) -> torch.Tensor:
    """``times``, or the grid index of each step of ``mask (b, l)`` when there are none."""
    if times is not None:
        return times
    return torch.arange(mask.shape[-1], device=mask.device, dtype=mask.dtype).expand_as(mask)


def missing_fraction(mask: torch.Tensor, times: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of the steps inside the series' spans (first to last observation) that are not
    observed: 0 for fully observed series, also padded ones. With ``times`` the span is counted
    in time units (one step per unit).

    Shapes: ``(b, l)[, (b, l)] -> ()``.
    """
    observed, times = mask > 0, _positions(mask, times)
    hi = torch.where(observed, times, -torch.inf).amax(-1)
    lo = torch.where(observed, times, torch.inf).amin(-1)
    steps = torch.where(observed.any(-1), hi - lo + 1, torch.zeros_like(hi)).sum()
    count = observed.sum()
    return (1 - count / steps).clamp_min(0) if bool(steps > 0) else steps


def gap_weights(
    mask: torch.Tensor, times: torch.Tensor | None = None, step: float = 1.0
) -> torch.Tensor:
    """Quadrature weight of each observation: the time it stands for in the kernel integral.

    A continuous convolution approximates ``int K(tau) x(t + tau) dtau`` by a sum over the
    observations. Weighting each observation by half the gap to its observed neighbours on
    either side (the whole gap at a series' first and last observation) makes that sum
    independent of how densely a stretch is sampled: a step missing in the middle of a series
    is covered by its neighbours instead of counting as a zero. On a fully observed regular
    grid every weight is 1 (the plain convolution); padding after a series' last observation
    changes nothing; a series with a single observation gets weight 1.

    Args:
        mask: ``(b, l)`` 1 observed, 0 unobserved.
        times: ``(b, l)`` observation times (any order); ``None``: the grid index of each step.
        step: time units per unit of ``times`` (the grid step ``1 / resolution`` of a finer grid).

    Shapes: ``(b, l)[, (b, l)] -> (b, l)`` (0 where unobserved).
    """
    observed, times = mask > 0, _positions(mask, times)
    t = torch.where(observed, times.to(mask.dtype), torch.inf)
    t, order = t.sort(-1)
    kept = torch.isfinite(t)
    gap = (t[:, 1:] - t[:, :-1]).nan_to_num(posinf=0.0)  # (b, l - 1), inf-inf = nan -> 0
    none = torch.zeros_like(kept[:, :1])
    linked = kept[:, 1:] & kept[:, :-1]  # both ends of a gap observed
    has_left, has_right = torch.cat([none, linked], -1), torch.cat([linked, none], -1)
    pad = torch.zeros_like(t[:, :1])
    left = torch.cat([pad, gap], -1) * has_left
    right = torch.cat([gap, pad], -1) * has_right
    w = torch.where(has_left & has_right, (left + right) / 2, left + right) * step
    w = torch.where(has_left | has_right, w, torch.ones_like(w))  # a lone observation: 1
    w = torch.where(kept, w, torch.zeros_like(w))
    return torch.zeros_like(w).scatter(-1, order, w)


def to_grid(
    values: torch.Tensor,
    times: torch.Tensor,
    mask: torch.Tensor | None = None,
    resolution: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Place observations on a regular grid of step ``1 / resolution`` (per series from its
    first observation).

    Times that are not multiples of ``1 / resolution`` are rounded to the nearest grid point;
    two observations of one series on the same grid point raise an error (use a finer
    ``resolution``).

    Shapes: ``(b, c, n), (b, n), (b, n) -> (b, c, l) grid values, (b, l) grid mask,
    (b, n) grid index of each observation``.
    """
    if resolution < 1 or int(resolution) != resolution:
        raise OptionError(f"resolution must be a positive integer, got {resolution}")
    b, c, n = values.shape
    if times.shape != (b, n):
        raise OptionError(f"times must have shape (b, n) = {(b, n)}, got {tuple(times.shape)}")
    valid = torch.ones(b, n, dtype=torch.bool, device=values.device) if mask is None else mask > 0
    start = torch.where(valid, times, torch.inf).amin(-1, keepdim=True)
    start = torch.where(torch.isfinite(start), start, torch.zeros_like(start))
    index = torch.round((times - start) * resolution).long()
    index = torch.where(valid, index, 0)
    length = int(index.max()) + 1 if n else 1
    grid_mask = torch.zeros(b, length, dtype=values.dtype, device=values.device)
    grid_mask.scatter_add_(1, index, valid.to(values.dtype))
    if bool((grid_mask > 1).any()):
        raise OptionError(
            f"two observations of a series fall on the same grid point at resolution "
            f"{resolution}; use a finer resolution (or the direct path)"
        )
    grid = torch.zeros(b, c, length, dtype=values.dtype, device=values.device)
    src = values * valid[:, None].to(values.dtype)
    grid.scatter_add_(2, index[:, None].expand(-1, c, -1), src)
    return grid, grid_mask, index


def pad_series(
    series: Sequence[np.ndarray | torch.Tensor],
    times: Sequence[np.ndarray | torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Batch series of unequal length: ``[(c, l_i)]`` (or ``[(l_i,)]``) → values, mask[, times].

    NaN values count as missing (mask 0). With ``times`` (one ``(l_i,)`` array per series) the
    times are padded too and returned; without, the series are assumed regularly sampled.

    Shapes: ``-> (b, c, max l), (b, max l), (b, max l) or None``.
    """
    arrays = [torch.as_tensor(np.asarray(s, dtype=np.float64)) for s in series]
    arrays = [a[None] if a.dim() == 1 else a for a in arrays]
    if not arrays:
        raise OptionError("no series given")
    c = arrays[0].shape[0]
    for i, a in enumerate(arrays):
        if a.dim() != 2 or a.shape[0] != c:
            raise OptionError(f"series {i} has shape {tuple(a.shape)}; expected ({c}, length)")
    length = max(a.shape[1] for a in arrays)
    values = torch.zeros(len(arrays), c, length, dtype=torch.float64)
    mask = torch.zeros(len(arrays), length, dtype=torch.float64)
    for i, a in enumerate(arrays):
        observed = ~torch.isnan(a).any(0)
        values[i, :, : a.shape[1]] = torch.nan_to_num(a)
        mask[i, : a.shape[1]] = observed.double()
    padded_times = None
    if times is not None:
        if len(times) != len(arrays):
            raise OptionError(f"{len(times)} time arrays for {len(arrays)} series")
        padded_times = torch.zeros(len(arrays), length, dtype=torch.float64)
        for i, (t, a) in enumerate(zip(times, arrays)):
            t = torch.as_tensor(np.asarray(t, dtype=np.float64))
            if t.shape != (a.shape[1],):
                raise OptionError(
                    f"times of series {i} have shape {tuple(t.shape)}, expected ({a.shape[1]},)"
                )
            padded_times[i, : a.shape[1]] = t
        padded_times = padded_times.to(dtype)
    return values.to(dtype), mask.to(dtype), padded_times


__all__ = [
    "apply_norm",
    "check_mask",
    "last_observed",
    "masked_batch_norm",
    "masked_mean",
    "pad_series",
    "time_span",
    "to_grid",
]
