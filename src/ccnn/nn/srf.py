"""Structured receptive fields with a learned scale: the N-Jet layer (Pintea et al., 2021,
"Resolution learning in deep convolutional networks using scale-space theory", arXiv:2106.03412).

Legend: b batch · c channels · n basis functions · k kernel extent · d data_dim.

A filter is a learned linear combination of the Gaussian-derivative basis up to ``order``::

    K_oi(x) = sum_{|a| <= order} alpha_{o,i,a} B_a(x),   B_a(x) = prod_d g_{a_d}(x_d; sigma)

with the scale-normalised 1D Gaussian derivatives (probabilists' Hermite polynomials He_n)::

    g_n(x; sigma) = sigma^n d^n/dx^n G(x; sigma) = (-1)^n He_n(x / sigma) G(x; sigma),
    G(x; sigma)   = exp(-x^2 / (2 sigma^2)) / (sqrt(2 pi) sigma),
    He_0 = 1,  He_1(t) = t,  He_{n+1}(t) = t He_n(t) - n He_{n-1}(t).

The basis has ``C(order + d, d)`` functions: ``order + 1`` in 1D, ``(order+1)(order+2)/2`` in 2D
(10 for order 3, 15 for order 4). One scale per layer is learned, ``sigma = 2^scale`` (in input
samples), and the kernel is sampled at integer offsets ``-h..h`` with ``h = ceil(k sigma + 0.5)``,
recomputed at every forward — the kernel size follows the learned scale (the size itself is a
step function without gradient; sigma gets its gradient through the basis values).
``h`` is capped at ``L - 1`` for an input of side ``L``: taps further out only ever meet the
zero padding, so the cap changes nothing.

Scale normalisation (the ``sigma^n`` factor) makes a filter's response to a signal resampled by a
factor ``s`` equal to that of the same filter with ``sigma * s``: :meth:`SRFConv.set_resolution`
uses this for cross-resolution evaluation.

The scale parameter carries the optimiser tag :data:`SRF_SCALE` (``ccnn.nn.params``), so an
optimiser builder can give it its own learning rate (``parameter_groups(model, groups=(...,
"srf_scale"))``); without that it trains with the default group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import reduce
from itertools import product

import torch
from torch import nn

from ccnn.errors import OptionError
from ccnn.nn.conv import CONVS, KeepsLastKernel, _check_common, _check_input
from ccnn.nn.functional import conv_nd
from ccnn.nn.functional.grids import parse_resolution_scale
from ccnn.nn.params import tag_parameter

SRF_SCALE = "srf_scale"
"""Optimiser tag of the learnable log2-scale of :class:`SRFConv`."""


def hermite_polynomials(t: torch.Tensor, order: int) -> torch.Tensor:
    """Probabilists' Hermite polynomials ``He_0..He_order`` at ``t``.

    Shapes: ``(*s) -> (order + 1, *s)``.
    """
    polys = [torch.ones_like(t)]
    if order >= 1:
        polys.append(t)
    for n in range(1, order):
        polys.append(t * polys[n] - n * polys[n - 1])
    return torch.stack(polys)


def gaussian_derivatives(x: torch.Tensor, sigma: torch.Tensor | float, order: int) -> torch.Tensor:
    """Scale-normalised Gaussian derivatives ``sigma^n d^n/dx^n G(x; sigma)``, n = 0..order.

    Shapes: ``(k,) -> (order + 1, k)``.
    """
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    t = x / sigma
    gauss = torch.exp(-0.5 * t.pow(2)) / (math.sqrt(2 * math.pi) * sigma)  # (k,)
    signs = torch.tensor([(-1.0) ** n for n in range(order + 1)], dtype=x.dtype, device=x.device)
    return signs[:, None] * hermite_polynomials(t, order) * gauss  # (order + 1, k)


def derivative_orders(order: int, data_dim: int) -> list[tuple[int, ...]]:
    """Multi-indices ``a`` with ``|a| <= order``, sorted by total order, then with the highest
    power of the first dim first: 2D order 2 -> (0,0), (1,0), (0,1), (2,0), (1,1), (0,2)."""
    orders = [a for a in product(range(order + 1), repeat=data_dim) if sum(a) <= order]
    return sorted(orders, key=lambda a: (sum(a), tuple(-v for v in a)))


def gaussian_basis(
    axes: Sequence[torch.Tensor], sigmas: Sequence[torch.Tensor | float], order: int
) -> torch.Tensor:
    """The separable N-D Gaussian-derivative basis on the grid ``axes`` (one 1D axis per dim).

    Shapes: ``[(k_1,), ..., (k_d,)] -> (n, k_1, ..., k_d)``, ``n = C(order + d, d)``.
    """
    per_dim = [gaussian_derivatives(a, s, order) for a, s in zip(axes, sigmas)]  # d x (order+1, k)
    data_dim = len(axes)
    basis = []
    for a in derivative_orders(order, data_dim):
        factors = [
            per_dim[d][a[d]].reshape([-1 if e == d else 1 for e in range(data_dim)])
            for d in range(data_dim)
        ]
        basis.append(reduce(torch.mul, factors))  # (k_1, ..., k_d)
    return torch.stack(basis)  # (n, *k)


def num_basis_functions(order: int, data_dim: int) -> int:
    """``C(order + d, d)``: ``order + 1`` in 1D, ``(order + 1)(order + 2) / 2`` in 2D."""
    return math.comb(order + data_dim, data_dim)


class SRFConv(KeepsLastKernel, nn.Module):
    """N-Jet convolution: Gaussian-derivative basis, learned coefficients and learned scale.

    Args:
        in_channels, out_channels: channels.
        data_dim: 1, 2 or 3 spatial dims.
        order: highest derivative order of the basis (the published FlexNet-SRF used 4).
        init_scale: initial ``scale``; ``sigma = 2^scale`` samples (0 -> sigma 1 -> 7 taps).
        k: kernel half-size in sigmas, ``h = ceil(k sigma + 0.5)``.
        bias: add a learned bias per output channel.
        causal: 1D only; keep the taps at offsets ``-h..0`` (the current and past samples).
        use_fft: passed to :func:`ccnn.nn.functional.conv_nd`.
        Other keywords (``kernel_size``, ...) are accepted and ignored: the size follows sigma.

    Coefficients are initialised N(0, 2 / (in_channels * n)).

    Shapes: ``(b, in_channels, *s) -> (b, out_channels, *s)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        data_dim: int = 2,
        *,
        order: int = 3,
        init_scale: float = 0.0,
        k: float = 2.0,
        bias: bool = True,
        causal: bool = False,
        use_fft: bool | None = None,
    ):
        super().__init__()
        _check_common(data_dim, causal)
        if order < 0 or int(order) != order:
            raise OptionError(f"SRF order must be a whole number >= 0, got {order}")
        if k <= 0:
            raise OptionError(f"SRF k (kernel half-size in sigmas) must be > 0, got {k}")
        self.in_channels, self.out_channels, self.data_dim = in_channels, out_channels, data_dim
        self.order, self.k, self.causal, self.use_fft = int(order), float(k), causal, use_fft
        self.num_basis = num_basis_functions(self.order, data_dim)
        self.weight = nn.Parameter(
            torch.randn(out_channels, in_channels, self.num_basis)
            * math.sqrt(2.0 / (in_channels * self.num_basis))
        )
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        tag_parameter(self, "scale", SRF_SCALE)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._resolution_scale: tuple[float, ...] | None = None
        self.last_kernel: torch.Tensor | None = None
        """The kernel of the last training forward (for kernel-norm regularisers)."""

    @property
    def sigma(self) -> torch.Tensor:
        """``2^scale`` (training resolution, in samples)."""
        return torch.pow(2.0, self.scale)

    def set_resolution(
        self, scale: float | Sequence[float] | None, rescale_amplitude: bool = True
    ) -> None:
        """Evaluate at ``scale`` times the training resolution: sigma (in samples) is multiplied
        by ``scale`` per dim; scale-normalised derivatives keep the response. None resets.
        (``rescale_amplitude=False``, used for sparse observations on a finer grid, is not
        available: the derivatives are always scale-normalised.)"""
        if not rescale_amplitude and scale not in (None, 1, 1.0):
            raise OptionError(
                "SRFConv cannot be sampled on a finer grid without rescaling its response; for "
                "irregularly sampled series use a continuous-kernel conv or time_path='direct'"
            )
        self._resolution_scale = parse_resolution_scale(scale, self.data_dim)

    def half_sizes(self, spatial: Sequence[int] | None = None) -> list[int]:
        """Kernel half-size per dim, ``ceil(k sigma + 0.5)`` (capped at ``L - 1`` if given)."""
        sigma = float(self.sigma.detach())
        scales = self._resolution_scale or (1.0,) * self.data_dim
        halves = [max(0, math.ceil(self.k * sigma * s + 0.5)) for s in scales]
        if spatial is not None:
            halves = [min(h, max(n - 1, 0)) for h, n in zip(halves, spatial)]
        return halves

    def kernel_size(self, spatial: Sequence[int] | None = None) -> tuple[int, ...]:
        """Current kernel extent per dim (odd; ``h + 1`` taps when causal)."""
        halves = self.half_sizes(spatial)
        return tuple(h + 1 if self.causal else 2 * h + 1 for h in halves)

    def basis(self, spatial: Sequence[int] | None = None) -> torch.Tensor:
        """Shapes: ``-> (n, *k)`` (the full, centred ``2h + 1`` grid per dim)."""
        ref = self.weight
        scales = self._resolution_scale or (1.0,) * self.data_dim
        axes = [
            torch.arange(-h, h + 1, device=ref.device, dtype=ref.dtype)
            for h in self.half_sizes(spatial)
        ]
        sigma = self.sigma.to(ref.dtype)
        return gaussian_basis(axes, [sigma * s for s in scales], self.order)

    def sample_kernel(self, spatial: Sequence[int] | None = None) -> torch.Tensor:
        """Shapes: ``-> (out, in, *k)``."""
        kernel = torch.einsum("oin,n...->oi...", self.weight, self.basis(spatial))  # (o, i, *k)
        if self.causal:
            kernel = kernel[..., : kernel.shape[-1] // 2 + 1]  # offsets -h..0
        return kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, in, *s) -> (b, out, *s)``."""
        _check_input(self, x)
        kernel = self.sample_kernel(x.shape[2:]).to(x.dtype)
        self.last_kernel = kernel if self.training else None
        return conv_nd(
            x, kernel, self.bias, causal=self.causal, separable=False, use_fft=self.use_fft
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, data_dim={self.data_dim}, "
            f"order={self.order}, k={self.k}, causal={self.causal}, basis={self.num_basis}"
        )


CONVS.add("SRF", SRFConv, "NJet")
