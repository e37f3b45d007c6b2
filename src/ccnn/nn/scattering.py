"""Learnable wavelet-scattering block: Morlet/Gaussian filter banks on a K×K grid + the block.

One block is one octave (J=1) of a 2D scattering transform (Bruna & Mallat, arXiv:1203.1513;
filter design of Kymatio, arXiv:1812.11214) whose filters are the *initialisation* of ordinary,
learnable convolutions with learnable channel mixing.

Legend: ``b`` batch · ``c`` channels · ``l`` orientations (``L``) · ``g`` conv groups ·
``k`` kernel size · ``h, w`` spatial.

Filters (all sampled on a K×K grid, K odd, the centre tap is position ``u = (0, 0)``)::

    Gabor     ψ^G_{σ,θ,ξ,s}(u) = (1/Z) Σ_{e ∈ {-2..2}²} exp(-(u+Ke)ᵀ Σ⁻¹ (u+Ke)/2 + i ξ ω_θᵀ(u+Ke))
              Σ⁻¹ = R_θ diag(1, s²) R_θᵀ / σ²,  ω_θ = (cos θ, sin θ),  Z = 2·3.1415·σ²/s
    Morlet    ψ = ψ^G_{σ,θ,ξ,s} − κ ψ^G_{σ,θ,0,s},   κ = Σ_u ψ^G_{σ,θ,ξ,s} / Σ_u ψ^G_{σ,θ,0,s}
              (so Σ_u ψ(u) = 0 exactly on the K×K kernel)
    Gaussian  φ = Re ψ^G_{σ,0,0,1}

with σ = 0.8, ξ = 3π/4, slant s = 4/L and θ_ℓ = (int(L − L/2 − 1) − ℓ)·π/L (= ⌊L/2 − 1⌋ − ℓ for
L ≥ 2). The sum over ``e`` is Kymatio's periodisation: the filter lives on the K-periodic torus,
summed over 5×5 periods. ``u`` is the first (row) and second (column) axis as in Kymatio, and
Z uses Kymatio's constant 3.1415.

Equivalence with Kymatio (tested in ``tests/test_scattering_filters.py``): our K×K kernel is
exactly ``kymatio...morlet_2d(K, K, 0.8, θ_ℓ, 3π/4, 4/L, offset=-(K//2))`` (the spatial filter
Kymatio builds before its FFT, with its periodisation, built on a K×K grid whose centre is the
origin); it equals ``fftshift(morlet_2d(K, K, ...))`` (origin at index 0, then centred) and the
inverse FFT of the j=0 wavelets / J=1 low-pass of ``filter_bank(K, K, J=1, L)`` (centred) up to
the far periodic replicas (< 1e-7 for K ≥ 5). For the centred grid the kernel is exactly
Hermitian (ψ(−u) = conj ψ(u)), so Kymatio's "real part of the FFT" step changes nothing.

Block (input ``c`` channels, output ``c(1+L)`` channels, or ``c`` with ``lowpass_only``)::

    y_φ = pool(W_φ ⋆ x),  a = pool(W_re ⋆ x),  b = pool(W_im ⋆ x)   (stride 1, pad K//2, groups g)
    out = cat(y_φ, M(a, b))       M = sqrt(a² + b² + 1e-8)         (complex_modulus)
                                  M = Σ_j v_j ReLU([a, b, −a, −b]_j)  (phase_relu, v_j = 1/√2)

``pool`` is one learnable 2×2 stride-2 kernel shared by all channels (init 0.25). ``⋆`` is
``conv2d`` (cross-correlation), so ``a + ib = conj(x ∗ ψ)`` — the same modulus as Kymatio's
convolution. Fused path: ``pool(W ⋆ x) = (p ∗ W) ⋆_{stride 2} x`` with a (K+1)×(K+1) kernel.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ccnn.errors import OptionError

__all__ = [
    "MODULUS_TYPES",
    "ScatteringBlock",
    "fuse_pool_kernel",
    "gabor_2d",
    "gaussian_2d",
    "mixing_groups",
    "morlet_2d",
    "orientation_angles",
    "scattering_filter_bank",
    "should_fuse",
]

SIGMA = 0.8
XI = 3.0 * math.pi / 4.0
KYMATIO_PI = 3.1415  # Kymatio's normalisation constant Z = 2·3.1415·σ²/slant (not math.pi)
MODULUS_TYPES = ("complex_modulus", "phase_relu")
MODULUS_EPS = 1e-8
BUILD_COST = 64  # multiply-adds charged per fused-kernel tap (see should_fuse)


# ----------------------------------------------------------------------------------------
# Filter bank (pure functions; float64 internally)
# ----------------------------------------------------------------------------------------
def _centred_grid(size: int, periods: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions ``u + K e`` of a centred K×K grid and its periodic replicas.

    Returns ``(xx, yy)`` of shape ``(P, P, K, K)`` with ``P = 2·periods + 1``.
    """
    if size < 1 or size % 2 == 0:
        raise OptionError(f"kernel size must be a positive odd integer, got {size}")
    base = torch.arange(size, dtype=torch.float64) - size // 2  # (k,)
    shifts = torch.arange(-periods, periods + 1, dtype=torch.float64) * size  # (P,)
    rows = shifts[:, None] + base[None, :]  # (P, k)
    xx = rows[:, None, :, None].expand(-1, len(shifts), -1, size)  # (P, P, k, k)
    yy = rows[None, :, None, :].expand(len(shifts), -1, size, -1)  # (P, P, k, k)
    return xx, yy


def gabor_2d(
    size: int,
    sigma: float,
    theta: float,
    xi: float,
    slant: float = 1.0,
    periods: int = 2,
) -> torch.Tensor:
    """Periodised 2D Gabor filter on a centred ``size × size`` grid (complex128, ``(k, k)``).

    ψ(u) = (1/Z) Σ_e exp(−(u+Ke)ᵀ Σ⁻¹ (u+Ke)/2 + i ξ ω_θᵀ (u+Ke)), Z = 2·3.1415·σ²/slant.
    ``periods`` replicas on each side (Kymatio: 2, i.e. a 5×5 sum).
    """
    c, s = math.cos(theta), math.sin(theta)
    # curvature R diag(1, slant²) Rᵀ / (2σ²)
    c00 = (c * c + slant**2 * s * s) / (2 * sigma**2)
    c01 = (c * s - slant**2 * s * c) / (2 * sigma**2)
    c11 = (s * s + slant**2 * c * c) / (2 * sigma**2)
    xx, yy = _centred_grid(size, periods)
    quad = c00 * xx * xx + 2 * c01 * xx * yy + c11 * yy * yy
    phase = xi * (c * xx + s * yy)
    gab = torch.polar(torch.exp(-quad), phase).sum(dim=(0, 1))  # (k, k)
    return gab / (2 * KYMATIO_PI * sigma**2 / slant)


def morlet_2d(
    size: int,
    sigma: float,
    theta: float,
    xi: float,
    slant: float = 0.5,
    periods: int = 2,
) -> torch.Tensor:
    """Zero-mean Morlet ψ = Gabor − κ·envelope on a centred K×K grid (complex128, ``(k, k)``)."""
    wave = gabor_2d(size, sigma, theta, xi, slant, periods)
    envelope = gabor_2d(size, sigma, theta, 0.0, slant, periods)
    kappa = wave.sum() / envelope.sum()
    return wave - kappa * envelope


def gaussian_2d(size: int, sigma: float = SIGMA, periods: int = 2) -> torch.Tensor:
    """Periodised Gaussian low-pass φ (Kymatio's ``gabor_2d(σ, θ=0, ξ=0)``), float64 ``(k, k)``."""
    return gabor_2d(size, sigma, 0.0, 0.0, 1.0, periods).real


def orientation_angles(L: int) -> torch.Tensor:
    """θ_ℓ = (int(L − L/2 − 1) − ℓ)·π/L for ℓ = 0..L−1 (Kymatio's ordering), float64 ``(l,)``."""
    if L < 1:
        raise OptionError(f"L must be >= 1, got {L}")
    top = int(L - L / 2 - 1)  # truncation like Kymatio (= ⌊L/2 − 1⌋ for L ≥ 2)
    return (top - torch.arange(L, dtype=torch.float64)) * math.pi / L


def scattering_filter_bank(
    kernel_size: int = 7, L: int = 8, sigma: float = SIGMA, xi: float = XI
) -> dict[str, torch.Tensor]:
    """J=1 filter bank on a K×K grid.

    Returns ``{"phi": (k, k) float64, "psi": (l, k, k) complex128, "theta": (l,)}``: Kymatio's
    J=1 low-pass and its L j=0 Morlet wavelets (σ, ξ, slant 4/L), centred.
    """
    theta = orientation_angles(L)
    psi = torch.stack([morlet_2d(kernel_size, sigma, float(t), xi, 4.0 / L) for t in theta])
    return {"phi": gaussian_2d(kernel_size, sigma), "psi": psi, "theta": theta}


# ----------------------------------------------------------------------------------------
# Channel-mixing groups, pooling fusion
# ----------------------------------------------------------------------------------------
def mixing_groups(channels: int, horizon: int | None, warn: bool = True) -> int:
    """Conv groups for a mixing horizon ``h``: g = C//h, decremented until C % g == 0.

    ``None`` means full mixing (g = 1). Each output channel then mixes ``C/g`` input channels
    (the actual horizon). A warning states the actual horizon when it differs from
    ``min(h, C)`` (e.g. h=27 at C=75 gives g=1, horizon 75).
    """
    if horizon is None:
        return 1
    if horizon < 1:
        raise OptionError(f"mixing horizon must be >= 1, got {horizon}")
    g = max(channels // horizon, 1)
    while channels % g:
        g -= 1
    if warn and channels // g != min(horizon, channels):
        warnings.warn(
            f"mixing horizon {horizon} does not divide {channels} channels: using groups={g}, "
            f"actual mixing horizon {channels // g}",
            stacklevel=2,
        )
    return g


def should_fuse(kernel_size: int, fuse: bool | str = "auto", positions: int | None = None) -> bool:
    """Fuse conv + 2×2 pool into one stride-2 (K+1)² conv?

    ``fuse=True/False`` forces the choice. Rule for ``"auto"``, counting multiply-adds per
    (output channel, input channel) pair over ``positions = batch·H·W`` input pixels:

    * unfused: ``positions·K²`` (the pool is negligible);
    * fused: ``positions/4·(K+1)²`` for the conv, plus building the fused kernel every forward:
      four memory-bound passes over (K+1)² weights, charged ``BUILD_COST = 64`` multiply-adds
      per weight tap (16 per pass; elementwise passes run far below conv throughput).

    Fuse when the fused count is smaller (``positions=None``: compare the convs only). For
    K=7 that means fused for ``positions > 124`` (3.06× fewer conv multiply-adds; every real
    training batch), plain for tiny maps (e.g. batch 2 at 4×4, where the kernel build of a
    large mixing weight would dominate), and never for K=1.
    """
    if isinstance(fuse, bool):
        return fuse
    if fuse != "auto":
        raise OptionError(f"fuse must be True, False or 'auto', got {fuse!r}")
    k2, kf2 = kernel_size**2, (kernel_size + 1) ** 2
    if positions is None:
        return kf2 / 4 < k2
    return positions * kf2 / 4 + BUILD_COST * kf2 < positions * k2


def fuse_pool_kernel(weight: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
    """Full 2D convolution of each K×K filter with the 2×2 pool kernel → (K+1)×(K+1).

    ``pool_{2×2, stride 2}(W ⋆ x) == (p ∗ W) ⋆_{stride 2} x`` with the same padding K//2.
    Four shifted, scaled copies of ``W`` added in place (memory: one extra copy of ``W``).
    Shapes: weight ``(o, i, k, k)``, pool ``(2, 2)`` → ``(o, i, k+1, k+1)``.
    """
    o, i, k, _ = weight.shape
    fused = weight.new_zeros(o, i, k + 1, k + 1)
    pool = pool.to(weight.dtype)
    for a in range(2):
        for b in range(2):
            fused[:, :, a : a + k, b : b + k] += pool[a, b] * weight
    return fused


# ----------------------------------------------------------------------------------------
# The block
# ----------------------------------------------------------------------------------------
class ScatteringBlock(nn.Module):
    """One learnable scattering octave: φ / Re ψ_ℓ / Im ψ_ℓ convs → shared 2×2 pool → modulus.

    Args:
        in_channels: C.
        L: number of orientations.
        kernel_size: odd K.
        modulus_type: ``"complex_modulus"`` or ``"phase_relu"``.
        groups: conv groups g (C % g == 0); see :func:`mixing_groups`. g = C is a
            per-channel (non-mixing) scattering; g = 1 mixes all channels.
        lowpass_only: output only the φ path (C channels); the ψ convs are not created.
        init: ``"scattering"`` (each output channel sees its own input channel through φ or
            Re/Im ψ_ℓ, zeros elsewhere) or ``"random"`` (PyTorch's default conv init).
        fuse: ``True``, ``False`` or ``"auto"`` (decided per forward by :func:`should_fuse`).

    Output channels: ``[φ(c) for c] + [M(ψ_ℓ ⋆ x_c) for c for ℓ]`` (index ``C + c·L + ℓ``).
    """

    def __init__(
        self,
        in_channels: int,
        L: int = 8,
        kernel_size: int = 7,
        *,
        modulus_type: Literal["complex_modulus", "phase_relu"] = "complex_modulus",
        groups: int = 1,
        lowpass_only: bool = False,
        init: Literal["scattering", "random"] = "scattering",
        fuse: bool | str = "auto",
        sigma: float = SIGMA,
        xi: float = XI,
    ):
        super().__init__()
        if modulus_type not in MODULUS_TYPES:
            raise OptionError(f"Unknown modulus_type {modulus_type!r}; use one of {MODULUS_TYPES}")
        if in_channels % groups:
            raise OptionError(f"groups={groups} must divide in_channels={in_channels}")
        if kernel_size % 2 == 0:
            raise OptionError(f"kernel_size must be odd, got {kernel_size}")
        self.in_channels, self.L, self.kernel_size = in_channels, L, kernel_size
        self.groups, self.modulus_type, self.lowpass_only = groups, modulus_type, lowpass_only
        should_fuse(kernel_size, fuse)  # validates
        self.fuse = fuse
        self.out_channels = in_channels if lowpass_only else in_channels * (1 + L)
        c, m, k = in_channels, in_channels // groups, kernel_size

        self.weight_phi = nn.Parameter(torch.zeros(c, m, k, k))
        if not lowpass_only:
            self.weight_re = nn.Parameter(torch.zeros(c * L, m, k, k))
            self.weight_im = nn.Parameter(torch.zeros(c * L, m, k, k))
        self.pool = nn.Parameter(torch.full((2, 2), 0.25))
        if modulus_type == "phase_relu" and not lowpass_only:
            self.phase_weight = nn.Parameter(torch.full((c * L, 4), 1 / math.sqrt(2)))
        self.reset_filters(init, sigma=sigma, xi=xi)

    @torch.no_grad()
    def reset_filters(self, init: str = "scattering", sigma: float = SIGMA, xi: float = XI):
        """(Re-)initialise the conv weights (pool and phase weights are left alone)."""
        weights = [self.weight_phi] + (
            [] if self.lowpass_only else [self.weight_re, self.weight_im]
        )
        if init == "random":
            for w in weights:
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))  # nn.Conv2d's default
            return
        if init != "scattering":
            raise OptionError(f"init must be 'scattering' or 'random', got {init!r}")
        if self.weight_phi.is_meta:
            return
        bank = scattering_filter_bank(self.kernel_size, self.L, sigma, xi)
        c, m, L = self.in_channels, self.in_channels // self.groups, self.L
        for w in weights:
            w.zero_()
        chans = torch.arange(c)
        self.weight_phi[chans, chans % m] = bank["phi"].to(self.weight_phi)
        if not self.lowpass_only:
            out = (chans[:, None] * L + torch.arange(L)).flatten()  # (c·l,) = c·L + ℓ
            src = (chans % m).repeat_interleave(L)  # (c·l,)
            psi = bank["psi"].repeat(c, 1, 1)  # (c·l, k, k)
            self.weight_re[out, src] = psi.real.to(self.weight_re)
            self.weight_im[out, src] = psi.imag.to(self.weight_im)

    def conv_weight(self) -> torch.Tensor:
        """All filters in one grouped conv weight, per group ``[φ, re, im]``; (c(1+2L), m, k, k)."""
        if self.lowpass_only:
            return self.weight_phi
        g, k = self.groups, self.kernel_size
        parts = [
            w.reshape(g, -1, w.shape[1], k, k)
            for w in (self.weight_phi, self.weight_re, self.weight_im)
        ]
        return torch.cat(parts, dim=1).flatten(0, 1)  # (g·(c+2cL)/g, m, k, k)

    def _split(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Undo :meth:`conv_weight`'s order → φ ``(b,c,h,w)``, a and b ``(b,cL,h,w)``."""
        g, c, L = self.groups, self.in_channels, self.L
        b, _, h, w = y.shape
        y = y.reshape(b, g, -1, h, w)  # (b, g, (c + 2cL)/g, h, w)
        n_phi, n_psi = c // g, c * L // g
        phi = y[:, :, :n_phi].reshape(b, c, h, w)
        re = y[:, :, n_phi : n_phi + n_psi].reshape(b, c * L, h, w)
        im = y[:, :, n_phi + n_psi :].reshape(b, c * L, h, w)
        return phi, re, im

    def linear_part(self, x: torch.Tensor, fuse: bool | None = None) -> torch.Tensor:
        """Conv + 2×2 pool, fused or the plain reference path. ``(b,c,h,w) → (b,n,h/2,w/2)``."""
        fuse = self.fuse if fuse is None else fuse
        fuse = should_fuse(self.kernel_size, fuse, x.shape[0] * x.shape[2] * x.shape[3])
        weight, pad = self.conv_weight(), self.kernel_size // 2
        if fuse:
            return F.conv2d(
                x, fuse_pool_kernel(weight, self.pool), stride=2, padding=pad, groups=self.groups
            )
        y = F.conv2d(x, weight, padding=pad, groups=self.groups)  # (b, n, h, w)
        pool = self.pool.to(y.dtype).expand(y.shape[1], 1, 2, 2)
        return F.conv2d(y, pool, stride=2, groups=y.shape[1])  # (b, n, h/2, w/2)

    def modulus(self, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        """Complex modulus or phase-ReLU of ``re + i·im``: ``(b, cL, h, w)`` each → same."""
        if self.modulus_type == "complex_modulus":
            out = torch.sqrt(re.float().square() + im.float().square() + MODULUS_EPS)
            return out.to(re.dtype)
        z = F.relu(torch.stack([re, im, -re, -im], dim=2)).flatten(1, 2)  # (b, cL·4, h, w)
        weight = self.phase_weight.to(z.dtype)[:, :, None, None]  # (cL, 4, 1, 1)
        return F.conv2d(z, weight, groups=weight.shape[0])

    def forward(self, x: torch.Tensor, fuse: bool | None = None) -> torch.Tensor:
        """Shapes: ``(b, c, h, w) → (b, c(1+L), ⌊h/2⌋, ⌊w/2⌋)`` (``(b, c, …)`` if lowpass_only)."""
        y = self.linear_part(x, fuse)
        if self.lowpass_only:
            return y
        phi, re, im = self._split(y)
        return torch.cat([phi, self.modulus(re, im)], dim=1)  # (b, c(1+L), h/2, w/2)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, L={self.L}, kernel_size={self.kernel_size}, "
            f"groups={self.groups}, modulus_type={self.modulus_type!r}, "
            f"lowpass_only={self.lowpass_only}, fuse={self.fuse!r}"
        )
