"""FFT convolution (``ccnn.nn.functional.fft_conv``) against the direct reference, and dispatch.

Legend: b batch · c channels · k kernel extent · l spatial extent.
"""

from __future__ import annotations

import pytest
import torch

from ccnn.nn.functional import (
    conv_nd,
    direct_conv,
    fft_conv,
    next_fast_len,
    prefer_fft,
    same_padding,
)
from ccnn.nn.functional.fftconv import fft_geometry

# (data_dim, causal, l, k): odd/even k, k > l, k == l (CKConv "same"), k == 2l - 1 ("full")
CASES = [
    (1, True, 12, 3),
    (1, True, 12, 4),
    (1, True, 12, 12),
    (1, True, 9, 17),
    (1, True, 7, 20),
    (1, False, 12, 5),
    (1, False, 12, 6),
    (1, False, 12, 12),
    (1, False, 9, 17),
    (1, False, 8, 22),
    (2, False, 7, 3),
    (2, False, 7, 4),
    (2, False, 6, 6),
    (2, False, 5, 9),
    (2, False, 5, 12),
    (3, False, 5, 3),
    (3, False, 4, 4),
    (3, False, 4, 7),
]
IDS = [f"{d}d-{'causal' if c else 'centred'}-l{l}-k{k}" for d, c, l, k in CASES]


def _inputs(
    d: int, l: int, k: int, separable: bool, dtype: torch.dtype, b: int = 2, c: int = 3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * d + 10 * l + k + separable)
    # non-square spatial extents catch dim mix-ups
    spatial = [l + i for i in range(d)]
    ks = [k - (i % 2) if k > 1 else k for i in range(d)]
    c_out = c if separable else c + 1
    x = torch.randn(b, c, *spatial, generator=g, dtype=dtype)
    w = torch.randn(c_out, 1 if separable else c, *ks, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    return x, w, bias


@pytest.mark.parametrize("separable", [True, False], ids=["depthwise", "dense"])
@pytest.mark.parametrize(("d", "causal", "l", "k"), CASES, ids=IDS)
def test_fft_matches_direct_float64(d: int, causal: bool, l: int, k: int, separable: bool) -> None:
    x, w, bias = _inputs(d, l, k, separable, torch.float64)
    x.requires_grad_(True)
    w.requires_grad_(True)
    bias.requires_grad_(True)
    y_fft = fft_conv(x, w, bias, causal=causal, separable=separable)
    y_dir = direct_conv(x, w, bias, causal=causal, separable=separable)
    assert y_fft.shape == y_dir.shape == (x.shape[0], w.shape[0], *x.shape[2:])
    scale = y_dir.abs().max().item()
    assert (y_fft - y_dir).abs().max().item() <= 1e-10 * scale

    gy = torch.randn_like(y_dir)
    g_fft = torch.autograd.grad(y_fft, (x, w, bias), gy)
    g_dir = torch.autograd.grad(y_dir, (x, w, bias), gy)
    for name, a, r in zip(("x", "kernel", "bias"), g_fft, g_dir):
        assert a.shape == r.shape
        err = (a - r).abs().max().item()
        assert err <= 1e-10 * max(r.abs().max().item(), 1.0), f"grad {name}: {err}"


@pytest.mark.parametrize("separable", [True, False], ids=["depthwise", "dense"])
@pytest.mark.parametrize(("d", "causal", "l", "k"), CASES[::3], ids=IDS[::3])
def test_fft_matches_direct_float32(d: int, causal: bool, l: int, k: int, separable: bool) -> None:
    x, w, bias = _inputs(d, l, k, separable, torch.float32)
    x.requires_grad_(True)
    w.requires_grad_(True)
    y_fft = fft_conv(x, w, bias, causal=causal, separable=separable)
    y_dir = direct_conv(x, w, bias, causal=causal, separable=separable)
    assert y_fft.dtype == torch.float32
    torch.testing.assert_close(y_fft, y_dir, rtol=1e-4, atol=1e-4 * y_dir.abs().max().item())
    gy = torch.randn_like(y_dir)
    for a, r in zip(torch.autograd.grad(y_fft, (x, w), gy), torch.autograd.grad(y_dir, (x, w), gy)):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())


@pytest.mark.parametrize(
    ("d", "causal", "separable", "l", "k"),
    [
        (1, True, True, 6, 3),
        (1, True, False, 5, 4),
        (1, False, True, 5, 8),
        (1, False, False, 6, 6),
        (2, False, True, 4, 3),
        (2, False, False, 4, 2),
        (3, False, True, 3, 2),
        (3, False, False, 3, 3),
    ],
)
def test_gradcheck(d: int, causal: bool, separable: bool, l: int, k: int) -> None:
    x, w, bias = _inputs(d, l, k, separable, torch.float64, b=2, c=2)
    args = (x.requires_grad_(), w.requires_grad_(), bias.requires_grad_())

    def f(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        # chunk_size=1 also exercises the chunked backward accumulation
        return fft_conv(x, w, bias, causal=causal, separable=separable, chunk_size=1)

    # full Jacobian for 1D depthwise; random-projection ("fast") gradcheck for the larger ones
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-8, fast_mode=d > 1 or not separable)


def test_partial_requires_grad() -> None:
    x, w, _ = _inputs(1, 10, 5, False, torch.float64)
    w.requires_grad_(True)
    (gw,) = torch.autograd.grad(fft_conv(x, w).sum(), w)
    (gw_ref,) = torch.autograd.grad(direct_conv(x, w).sum(), w)
    torch.testing.assert_close(gw, gw_ref)
    x.requires_grad_(True)
    w.requires_grad_(False)
    (gx,) = torch.autograd.grad(fft_conv(x, w).sum(), x)
    (gx_ref,) = torch.autograd.grad(direct_conv(x, w).sum(), x)
    torch.testing.assert_close(gx, gx_ref)


@pytest.mark.parametrize("separable", [True, False], ids=["depthwise", "dense"])
def test_causality(separable: bool) -> None:
    x, w, _ = _inputs(1, 32, 32, separable, torch.float64)
    y = fft_conv(x, w, causal=True, separable=separable)
    t = 17
    x2 = x.clone()
    x2[..., t:] = torch.randn_like(x2[..., t:]) * 100
    y2 = fft_conv(x2, w, causal=True, separable=separable)
    assert torch.equal(y[..., :t], y2[..., :t]) or (y[..., :t] - y2[..., :t]).abs().max() < 1e-12
    assert (y[..., t:] - y2[..., t:]).abs().max() > 1.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("d", "separable"), [(1, True), (2, False)])
def test_half_precision(dtype: torch.dtype, d: int, separable: bool) -> None:
    x, w, bias = _inputs(d, 16, 5, separable, torch.float32)
    ref = fft_conv(x, w, bias, separable=separable)
    xh, wh = x.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
    y = fft_conv(xh, wh, bias.to(dtype), separable=separable)
    assert y.dtype == dtype
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(y.float(), ref, rtol=tol, atol=tol * ref.abs().max().item())
    gx, gw = torch.autograd.grad(y.float().sum(), (xh, wh))
    assert gx.dtype == dtype and gw.dtype == dtype


@pytest.mark.parametrize(
    ("d", "causal", "separable"), [(1, True, True), (1, False, False), (2, False, True)]
)
def test_conv_nd_paths_agree(d: int, causal: bool, separable: bool) -> None:
    x, w, bias = _inputs(d, 10, 5, separable, torch.float64)
    outs = [
        conv_nd(x, w, bias, causal=causal, separable=separable, use_fft=u)
        for u in (True, False, None)
    ]
    for y in outs[1:]:
        torch.testing.assert_close(y, outs[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 2, 5, 1000])
@pytest.mark.parametrize("separable", [True, False], ids=["depthwise", "dense"])
def test_chunking_identical(chunk: int, separable: bool) -> None:
    x, w, bias = _inputs(2, 6, 3, separable, torch.float64, b=3, c=4)
    x.requires_grad_(True)
    w.requires_grad_(True)
    ref = fft_conv(x, w, bias, separable=separable, chunk_size=10**9)
    y = fft_conv(x, w, bias, separable=separable, chunk_size=chunk)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    gy = torch.randn_like(y)
    for a, r in zip(torch.autograd.grad(y, (x, w), gy), torch.autograd.grad(ref, (x, w), gy)):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


def test_next_fast_len() -> None:
    assert [next_fast_len(n) for n in (1, 2, 7, 11, 2047, 4097, 31999)] == [
        1, 2, 8, 12, 2048, 4320, 32000,
    ]  # fmt: skip
    for n in range(1, 300):
        m = next_fast_len(n)
        assert m >= n
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        assert r == 1
        assert all(next_fast_len(j) == m for j in range(n, m + 1))


def test_geometry_no_wraparound_and_crop() -> None:
    # centred CKConv "same" kernel: n ≈ 1.5 l, not 2 l
    _, n, _ = fft_geometry((1000,), (1000,), causal=False)
    assert 1500 <= n[0] < 1600
    # taps that can never meet the input are cropped: k = 5l gives the same n as k = 2l - 1
    crop, n_big, _ = fft_geometry((10,), (50,), causal=False)
    assert n_big == fft_geometry((10,), (19,), causal=False)[1]
    assert crop[0].stop - crop[0].start == 19


def test_same_padding_convention() -> None:
    assert same_padding((4,), causal=True) == [3, 0]
    assert same_padding((4, 5), causal=False) == [2, 2, 1, 2]


def test_dispatch_choice() -> None:
    # long 1D kernels (CKConv) -> FFT; tiny kernels -> direct
    assert prefer_fft((8, 140, 4096), (140, 1, 4096), True, "cpu", causal=True)
    assert prefer_fft((8, 140, 1024), (140, 1, 1024), True, "cuda", causal=True)
    assert not prefer_fft((8, 140, 4096), (140, 1, 3), True, "cpu", causal=True, needs_grad=False)
    assert not prefer_fft((8, 64, 32, 32), (64, 64, 3, 3), False, "cpu")
    assert not prefer_fft((8, 64, 32, 32), (64, 64, 3, 3), False, "cuda")
    assert prefer_fft((8, 140, 32, 32), (140, 1, 33, 33), True, "cpu")


@pytest.mark.parametrize("fn", [fft_conv, conv_nd])
def test_errors(fn) -> None:  # noqa: ANN001
    x = torch.randn(2, 3, 10)
    with pytest.raises(ValueError, match=r"2 spatial dim.*\(2, 3, 10\)"):
        fn(x, torch.randn(3, 3, 3, 3))
    with pytest.raises(ValueError, match="input has 3 channels.*expects 4"):
        fn(x, torch.randn(4, 4, 3))
    with pytest.raises(ValueError, match="input has 3 channels.*expects 5"):
        fn(x, torch.randn(5, 1, 3), separable=True)
    with pytest.raises(ValueError, match="causal.*data_dim=2"):
        fn(torch.randn(2, 3, 8, 8), torch.randn(3, 1, 3, 3), causal=True, separable=True)
    with pytest.raises(ValueError, match="1-3 spatial dims"):
        fn(torch.randn(2, 3), torch.randn(3, 3))
    if fn is fft_conv:
        with pytest.raises(ValueError, match=r"bias must have shape \(4,\), got \(3,\)"):
            fn(x, torch.randn(4, 3, 3), torch.randn(3))
        with pytest.raises(ValueError, match="chunk_size must be a positive"):
            fn(x, torch.randn(4, 3, 3), chunk_size=0)
