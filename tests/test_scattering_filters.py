"""Scattering filter bank vs Kymatio, mixing-horizon arithmetic, and the block's fast paths."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ccnn.nn.scattering import (
    ScatteringBlock,
    fuse_pool_kernel,
    gaussian_2d,
    mixing_groups,
    orientation_angles,
    scattering_filter_bank,
    should_fuse,
)

REF = np.load(Path(__file__).parent / "reference" / "scattering_filters.npz")
KS, LS = (3, 5, 7), (1, 3, 4, 8)


# ---------------------------------------------------------------------------------------
# Filters vs Kymatio (stored values made by tests/reference/make_scattering_reference.py)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("K", KS)
@pytest.mark.parametrize("L", LS)
def test_filters_match_kymatio_reference(K, L):
    bank = scattering_filter_bank(K, L)
    psi, phi = bank["psi"].numpy(), bank["phi"].numpy()
    # exactly Kymatio's spatial construction on the centred K×K grid (its float32 arithmetic)
    np.testing.assert_allclose(psi, REF[f"psi_offset_K{K}_L{L}"], atol=2e-7, rtol=0)
    np.testing.assert_allclose(phi, REF[f"phi_offset_K{K}"], atol=2e-7, rtol=0)
    # origin-at-0 construction then centred, and Kymatio's Fourier filter_bank (inverse FFT):
    # differ only by far periodic replicas (largest for K=3, L=8: elongated envelope)
    tol = 1e-5 if (K, L) == (3, 8) else 3e-7
    np.testing.assert_allclose(psi, REF[f"psi_shift_K{K}_L{L}"], atol=tol, rtol=0)
    np.testing.assert_allclose(psi, REF[f"psi_bank_K{K}_L{L}"], atol=tol, rtol=0)
    np.testing.assert_allclose(phi, REF[f"phi_bank_K{K}_L{L}"], atol=3e-7, rtol=0)


def test_filters_match_live_kymatio():
    fb = pytest.importorskip("kymatio.scattering2d.filter_bank")
    for K, L in [(7, 4), (7, 8), (5, 6)]:
        bank = scattering_filter_bank(K, L)
        for ell, theta in enumerate(orientation_angles(L).tolist()):
            ky = fb.morlet_2d(K, K, 0.8, theta, 3 * np.pi / 4, 4 / L, offset=-(K // 2))
            np.testing.assert_allclose(bank["psi"][ell].numpy(), ky, atol=2e-7)
        ky_phi = np.real(fb.gabor_2d(K, K, 0.8, 0, 0, offset=-(K // 2)))
        np.testing.assert_allclose(bank["phi"].numpy(), ky_phi, atol=2e-7)


@pytest.mark.parametrize("L", [2, 4, 8])
def test_filter_properties(L):
    bank = scattering_filter_bank(7, L)
    psi = bank["psi"]
    assert psi.shape == (L, 7, 7) and bank["phi"].shape == (7, 7)
    assert psi.sum(dim=(-1, -2)).abs().max() < 1e-12  # Morlet: exactly zero mean on the kernel
    torch.testing.assert_close(psi.flip(-1, -2), psi.conj())  # Hermitian: FFT is real
    theta = orientation_angles(L)
    assert theta[0] == pytest.approx((math.floor(L / 2 - 1)) * math.pi / L)
    torch.testing.assert_close(
        theta[:-1] - theta[1:], torch.full((L - 1,), math.pi / L, dtype=theta.dtype)
    )
    phi = gaussian_2d(7)
    assert phi.argmax() == 24 and (phi > 0).all()  # centred


# ---------------------------------------------------------------------------------------
# Mixing horizon
# ---------------------------------------------------------------------------------------
def test_mixing_horizon_arithmetic():
    # the case: h=27 at C=75 (L=4) → 75 // 27 = 2 does not divide 75 → g=1, horizon 75
    with pytest.warns(UserWarning, match="actual mixing horizon 75"):
        assert mixing_groups(75, 27) == 1
    with pytest.warns(UserWarning, match="actual mixing horizon 75"):
        assert mixing_groups(375, 27) == 5  # 13..6 do not divide 375
    with pytest.warns(UserWarning, match="actual mixing horizon 75"):
        assert mixing_groups(1875, 27) == 25
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mixing_groups(3, 27) == 1  # fewer channels than the horizon: full mixing
        assert mixing_groups(15, 27) == 1
        assert mixing_groups(243, 27) == 9  # L=8: 3·9^k channels divide exactly
        assert mixing_groups(2187, 27) == 81
        assert mixing_groups(19683, 27) == 729
        assert mixing_groups(75, None) == 1
    for c in range(1, 200):
        g = mixing_groups(c, 7, warn=False)
        assert c % g == 0 and 1 <= g <= max(c // 7, 1)


# ---------------------------------------------------------------------------------------
# Block
# ---------------------------------------------------------------------------------------
def _perturbed_block(c, L, K, groups, modulus, lowpass_only=False, dtype=torch.float64):
    torch.manual_seed(0)
    blk = ScatteringBlock(
        c, L, K, groups=groups, modulus_type=modulus, lowpass_only=lowpass_only
    ).to(dtype)
    with torch.no_grad():
        for p in blk.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return blk


@pytest.mark.parametrize("modulus", ["complex_modulus", "phase_relu"])
@pytest.mark.parametrize("c,groups,K", [(3, 1, 7), (6, 3, 5), (6, 6, 3), (4, 2, 7)])
@pytest.mark.parametrize("lowpass_only", [False, True])
def test_fused_equals_unfused(modulus, c, groups, K, lowpass_only):
    blk = _perturbed_block(c, 3, K, groups, modulus, lowpass_only)
    for size, dtype, tol in [((18, 16), torch.float64, 1e-10), ((17, 15), torch.float32, 1e-5)]:
        b = blk.to(dtype)
        x = torch.randn(2, c, *size, dtype=dtype, requires_grad=True)
        y_f, y_u = b(x, fuse=True), b(x, fuse=False)
        assert y_f.shape == y_u.shape == (2, b.out_channels, size[0] // 2, size[1] // 2)
        torch.testing.assert_close(y_f, y_u, atol=tol, rtol=tol)
        g = torch.randn_like(y_f)
        grads_f = torch.autograd.grad((y_f * g).sum(), [x, *b.parameters()])
        grads_u = torch.autograd.grad((y_u * g).sum(), [x, *b.parameters()])
        for a, bb in zip(grads_f, grads_u):
            torch.testing.assert_close(a, bb, atol=10 * tol, rtol=10 * tol)


def test_fuse_pool_kernel_is_full_convolution():
    w, p = torch.randn(2, 1, 3, 3, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64)
    fused = fuse_pool_kernel(w, p)
    ref = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    for a in range(2):
        for b in range(2):
            ref[..., a : a + 3, b : b + 3] += p[a, b] * w
    torch.testing.assert_close(fused, ref)
    assert should_fuse(7) and should_fuse(3) and not should_fuse(1)
    assert should_fuse(7, positions=128 * 56 * 56) and should_fuse(7, positions=125)
    assert not should_fuse(7, positions=124) and not should_fuse(7, positions=2 * 4 * 4)
    assert not should_fuse(1, positions=10**6)
    assert should_fuse(7, False) is False and should_fuse(1, True) is True


def test_scattering_init_structure():
    c, L, K, groups = 6, 4, 7, 2
    blk = ScatteringBlock(c, L, K, groups=groups)
    bank = scattering_filter_bank(K, L)
    m = c // groups
    for o in range(c):
        for i in range(m):
            expect = bank["phi"].float() if i == o % m else torch.zeros(K, K)
            torch.testing.assert_close(blk.weight_phi[o, i], expect)
    for o in range(c * L):
        src, ell = divmod(o, L)
        for i in range(m):
            own = i == src % m
            torch.testing.assert_close(
                blk.weight_re[o, i], bank["psi"][ell].real.float() if own else torch.zeros(K, K)
            )
            torch.testing.assert_close(
                blk.weight_im[o, i], bank["psi"][ell].imag.float() if own else torch.zeros(K, K)
            )
    assert torch.equal(blk.pool, torch.full((2, 2), 0.25))
    rnd = ScatteringBlock(c, L, K, groups=groups, init="random")
    assert (rnd.weight_re != 0).float().mean() > 0.99


def test_block_computes_first_order_scattering():
    """At init (per-channel) the block is pool(x ⋆ φ) and pool |x ∗ ψ_ℓ| channel by channel."""
    c, L, K = 2, 4, 7
    blk = ScatteringBlock(c, L, K, groups=c).double()
    x = torch.randn(1, c, 16, 16, dtype=torch.float64)
    bank = scattering_filter_bank(K, L)
    pool = lambda t: F.avg_pool2d(t, 2)  # noqa: E731
    out = blk(x)
    assert out.shape == (1, c * (1 + L), 8, 8)
    for ch in range(c):
        xc = x[:, ch : ch + 1]
        phi = F.conv2d(xc, bank["phi"][None, None], padding=K // 2)
        torch.testing.assert_close(out[:, ch : ch + 1], pool(phi))
        for ell in range(L):
            psi = bank["psi"][ell].flip(-1, -2)  # true convolution x ∗ ψ
            a = F.conv2d(xc, psi.real[None, None], padding=K // 2)
            b = F.conv2d(xc, psi.imag[None, None], padding=K // 2)
            # the pool acts before the modulus: |pool(x ∗ ψ)|
            mod = torch.sqrt(pool(a) ** 2 + pool(b) ** 2 + 1e-8)
            torch.testing.assert_close(out[:, c + ch * L + ell : c + ch * L + ell + 1], mod)


def test_modulus_shapes_and_phase_relu_init():
    c, L = 3, 4
    x = torch.randn(2, c, 12, 10)
    for mt in ("complex_modulus", "phase_relu"):
        blk = ScatteringBlock(c, L, 5, modulus_type=mt, groups=c)
        assert blk(x).shape == (2, c * (1 + L), 6, 5)
        lp = ScatteringBlock(c, L, 5, modulus_type=mt, lowpass_only=True)
        assert lp(x).shape == (2, c, 6, 5)
        assert not hasattr(lp, "weight_re")
    blk = ScatteringBlock(c, L, 5, modulus_type="phase_relu")
    assert blk.phase_weight.shape == (c * L, 4)
    assert torch.allclose(blk.phase_weight, torch.tensor(2**-0.5))
    a, b = torch.randn(2, c * L, 4, 4), torch.randn(2, c * L, 4, 4)
    torch.testing.assert_close(blk.modulus(a, b), (a.abs() + b.abs()) / math.sqrt(2))
    cm = ScatteringBlock(c, L, 5)
    torch.testing.assert_close(cm.modulus(a, b), torch.sqrt(a**2 + b**2 + 1e-8))
