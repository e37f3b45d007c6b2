"""Gaussian masks that localise continuous kernels (FlexConv, arXiv:2110.08059) and cropping.

Legend: p kernel positions · d data_dim · n grid points per dim.

::

    mask(x) = exp(-1/2 sum_d (x_d - mu_d)^2 / (sigma_d^2 + 1e-8))

The ``1e-8`` guard keeps the mask finite as sigma -> 0 (the published code produced NaN losses
there). sigma (one per dim) starts at ``init_value`` and is learned; mu is +1 for causal 1D
kernels (the most recent step) and 0 otherwise, learned only if ``learn_mean``.

Dynamic cropping evaluates the kernel network only where the mask exceeds ``threshold``: the
roots are ``mu +- sigma sqrt(-2 ln threshold)`` (threshold 0.1 -> +-2.146 sigma).

* causal 1D: keep the tail of the grid from the last grid point at or below the lower root to
  the end (so position +1, which multiplies the current input, is always kept);
* otherwise: per dim, a centred window that keeps the positions strictly inside the largest
  absolute root (an odd-size window for odd grids).

At init on sMNIST (784 positions, init 0.075, threshold 0.1) this keeps 65 taps; on a 33x33
grid, 5x5 — the same as the published implementation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ccnn.errors import OptionError
from ccnn.nn.params import MASK, tag_parameter
from ccnn.registry import Registry

MASKS: Registry = Registry("mask type")


@MASKS.register("gaussian", "Gaussian")
class GaussianMask(nn.Module):
    """Learnable axis-aligned Gaussian mask over kernel positions.

    Args:
        data_dim: number of spatial dims.
        init_value: initial sigma (``mask.init_value``).
        causal: place the mean at +1 (1D only).
        learn_mean: learn mu as well.
        threshold: mask value below which positions are cropped.
        dynamic_cropping: crop the kernel grid to the mask's support.
        temperature: accepted for config compatibility; unused by a Gaussian mask.
    """

    def __init__(
        self,
        data_dim: int,
        init_value: float = 0.075,
        causal: bool = False,
        learn_mean: bool = False,
        threshold: float = 0.1,
        dynamic_cropping: bool = True,
        temperature: float = 0.0,
    ):
        super().__init__()
        if init_value <= 0:
            raise OptionError(
                f"Gaussian mask init_value must be > 0 (mask.init_value), got {init_value}"
            )
        if dynamic_cropping and not 0 < threshold < 1:
            raise OptionError(
                "mask threshold must be in (0, 1) for dynamic cropping (mask.threshold), "
                f"got {threshold}"
            )
        self.data_dim, self.causal = data_dim, causal
        self.threshold, self.dynamic_cropping = threshold, dynamic_cropping
        self.init_value = init_value
        mean = torch.full((data_dim,), 1.0 if causal else 0.0)
        self.sigma = nn.Parameter(torch.full((data_dim,), float(init_value)))
        tag_parameter(self, "sigma", MASK)
        if learn_mean:
            self.mean = nn.Parameter(mean)
            tag_parameter(self, "mean", MASK)
        else:
            self.register_buffer("mean", mean)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(p, d) -> (p,)``."""
        var = self.sigma.pow(2) + 1e-8
        return torch.exp(-0.5 * ((positions - self.mean).pow(2) / var).sum(-1))

    @torch.no_grad()
    def crop(self, axes: list[torch.Tensor]) -> list[slice]:
        """Index ranges (one per dim) of the grid ``axes`` to keep. No gradient."""
        if not self.dynamic_cropping:
            return [slice(0, len(a)) for a in axes]
        reach = self.sigma.abs() * math.sqrt(-2.0 * math.log(self.threshold))  # (d,)
        slices = []
        for d, axis in enumerate(axes):
            n = len(axis)
            lo, hi = (self.mean[d] - reach[d]).item(), (self.mean[d] + reach[d]).item()
            if self.causal:
                start = int(
                    torch.searchsorted(axis, torch.tensor(lo, dtype=axis.dtype), right=True)
                )
                slices.append(slice(max(start - 1, 0), n))
            else:
                r = max(abs(lo), abs(hi))
                if r >= 1.0:
                    slices.append(slice(0, n))
                    continue
                half = axis[: n // 2 + 1]
                first = int((half <= -r).sum())
                first = min(first, (n - 1) // 2)
                slices.append(slice(first, n - first))
        return slices

    def extra_repr(self) -> str:
        return (
            f"data_dim={self.data_dim}, init_value={self.init_value}, causal={self.causal}, "
            f"threshold={self.threshold}, dynamic_cropping={self.dynamic_cropping}"
        )


def build_mask(mask_type: str | None, **kwargs) -> GaussianMask | None:
    """``None``/``''`` → no mask; otherwise a registered mask (others raise, listing names).

    Only ``gaussian`` is implemented: the published code's other mask types were stubs.
    """
    if not mask_type:
        return None
    return MASKS.build(mask_type, **kwargs)
