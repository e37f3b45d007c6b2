"""FFT convolution in 1, 2 or 3 spatial dimensions with a hand-written backward.

Legend: b batch · c channels (``i`` in, ``o`` out) · k kernel extent · l spatial extent
(``l`` stands for every spatial dim: length, height × width, depth × height × width) ·
n FFT extent · f frequency bins (``n // 2 + 1`` on the last dim, ``n`` on the others).

Semantics are those of :func:`ccnn.nn.functional.direct.direct_conv`: a size-preserving
*correlation* (like ``torch.nn.functional.conv*d``) with the padding of
:func:`~ccnn.nn.functional.direct.same_padding` (``p`` zeros before each dim: ``k - 1`` for
causal, ``(k - 1) // 2`` for centred), i.e. per spatial dim

    y[t] = sum_j w[j] · x[t + j - p],        t = 0 … l-1,   x[s] = 0 outside [0, l).

Maths. Put the kernel on a circle of length ``n`` as ``g[(p - j) mod n] = w[j]``. Then the
circular convolution ``(x ⊛ g)[t] = sum_m g[m] x[(t - m) mod n]`` equals ``y[t]`` for every
``t < l`` as long as no index ``t + j - p`` that lies outside ``[0, l)`` wraps back into it,
i.e. ``n ≥ l + max(p, k - 1 - p)`` (and ``n ≥ k``). Kernel taps that can never meet the input
(``|j - p| ≥ l``) are cropped first, so ``n < 2l`` for centred kernels of any size (the CKConv
"same" kernel of size ``l`` needs ``n ≈ 1.5 l``, the "full" ``2l - 1`` one ``n ≈ 2l``). By the
convolution theorem ``x ⊛ g = irfft(rfft(x, n) · rfft(g))``; ``n`` is rounded up to a 5-smooth
number (:func:`next_fast_len`) because FFTs of lengths with large prime factors are many times
slower. Dense kernels mix channels per frequency: ``Y[b,o,f] = sum_i X[b,i,f] G[o,i,f]``.

Backward (the map ``x -> y`` is ``crop_l ∘ (· ⊛ g) ∘ zero-pad_n``, so its adjoint is a circular
*correlation*, i.e. a product with the conjugate spectrum):

    grad_x = crop_l irfft(GY · conj(G))          GY = rfft(zero-pad_n(grad_y))
    grad_g = irfft(sum_b conj(X) · GY)           grad_w[j] = grad_g[(p - j) mod n]

Both reuse the spectra ``X`` and ``G`` saved by the forward, which is ~25-50 % cheaper on CPU than
letting autograd differentiate through ``rfft``/``irfft``. Batches of rows ``b · c`` are processed
in chunks to bound the size of the temporaries. Half-precision inputs are transformed in float32
(FFTs never run in float16/bfloat16) and the result is cast back.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ccnn.errors import OptionError
from ccnn.nn.functional.direct import check_conv_args, same_padding

__all__ = ["fft_conv", "next_fast_len", "fft_geometry"]

#: Default work per chunk: rows · prod(n) (real elements of the zero-padded input).
DEFAULT_CHUNK_ELEMENTS = 1 << 22

_HALF = (torch.float16, torch.bfloat16)


def next_fast_len(n: int) -> int:
    """Smallest ``m ≥ n`` of the form ``2^a · 3^b · 5^c`` (fast for every FFT backend).

    >>> next_fast_len(2047), next_fast_len(31999), next_fast_len(49)
    (2048, 32000, 50)
    """
    if n <= 1:
        return 1
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # smallest power of two bringing p35 to at least n
            q = -(-n // p35)
            cand = p35 * (1 << (q - 1).bit_length())
            best = min(best, cand)
            p35 *= 3
        p5 *= 5
    return best


def _fft_len(n: int) -> int:
    """Even 5-smooth length ``≥ n`` (odd lengths such as 45 are ~30 % slower per element)."""
    return 2 * next_fast_len(-(-n // 2)) if n > 1 else 1


def fft_geometry(
    spatial: tuple[int, ...], kernel_size: tuple[int, ...], causal: bool
) -> tuple[list[slice], list[int], list[int]]:
    """Kernel crop, FFT extents and left pads for a size-preserving FFT convolution.

    Returns ``(crop, n, before)``: per spatial dim the slice of kernel taps that can reach the
    input, the FFT extent ``n`` and the number ``p`` of implicit zeros before the input (relative
    to the cropped kernel).
    """
    pad = same_padding(kernel_size, causal)  # last dim first: [before, after, ...]
    crop: list[slice] = []
    sizes: list[int] = []
    befores: list[int] = []
    for d, (l, k) in enumerate(zip(spatial, kernel_size)):
        p = pad[2 * (len(kernel_size) - 1 - d)]
        lo, hi = max(0, p - l + 1), min(k - 1, p + l - 1)
        p -= lo
        kk = hi - lo + 1
        crop.append(slice(lo, hi + 1))
        sizes.append(_fft_len(max(l + max(p, kk - 1 - p), kk)))
        befores.append(p)
    return crop, sizes, befores


def _tap_index(
    kernel_size: tuple[int, ...], n: list[int], before: list[int], device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Advanced index mapping kernel tap ``j`` to circle position ``(p - j) mod n`` per dim."""
    d = len(kernel_size)
    idx = []
    for a, (k, nn, p) in enumerate(zip(kernel_size, n, before)):
        i = (p - torch.arange(k, device=device)) % nn
        idx.append(i.view([k if b == a else 1 for b in range(d)]))
    return tuple(idx)


def _chunks(b: int, c: int, rows: int, separable: bool) -> list[tuple[slice, slice]]:
    """Split the (batch, channel) grid into blocks of about ``rows`` rows.

    Dense convolutions need every input channel at once, so only the batch is split.
    """
    rows = max(1, rows)
    if not separable or rows >= c:
        nb = max(1, rows // max(c, 1))
        return [(slice(i, min(i + nb, b)), slice(None)) for i in range(0, b, nb)]
    return [
        (slice(i, i + 1), slice(j, min(j + rows, c))) for i in range(b) for j in range(0, c, rows)
    ]


def _mix(a: torch.Tensor, b: torch.Tensor, out: str) -> torch.Tensor:
    """Per-frequency channel contraction as one batched matmul over the bins.

    ``out="bo"``: ``a (b, i, *f)``, ``b (o, i, *f)`` -> ``(b, o, *f)`` (sum over i);
    ``out="oi"``: ``a (b, o, *f)``, ``b (b, i, *f)`` -> ``(o, i, *f)`` (sum over the batch).
    (``torch.einsum`` with ``...``, or ``bmm`` on strided complex operands, is an order of
    magnitude slower on CPU.)
    """
    f = a.shape[2:]
    # complex bmm on CPU loops over the batch unless its operands are contiguous
    if out == "bo":
        af, bf = a.flatten(2).permute(2, 0, 1), b.flatten(2).permute(2, 1, 0)  # (f,b,i) (f,i,o)
    else:
        af, bf = a.flatten(2).permute(2, 1, 0), b.flatten(2).permute(2, 0, 1)  # (f,o,b) (f,b,i)
    y = torch.bmm(af.contiguous(), bf.contiguous())
    return y.permute(1, 2, 0).reshape(*y.shape[1:], *f)


class _FFTConv(torch.autograd.Function):
    """Autograd function behind :func:`fft_conv` (bias is added inside to save a pass)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        kernel: torch.Tensor,
        bias: torch.Tensor | None,
        causal: bool,
        separable: bool,
        chunk_size: int | None,
    ) -> torch.Tensor:
        out_dtype = torch.promote_types(x.dtype, kernel.dtype)
        cdtype = torch.float32 if out_dtype in _HALF else out_dtype
        d = kernel.dim() - 2
        dims = tuple(range(2, 2 + d))
        spatial = tuple(x.shape[2:])
        crop, n, before = fft_geometry(spatial, tuple(kernel.shape[2:]), causal)
        b, c_in = x.shape[:2]
        c_out = kernel.shape[0]
        out_crop = (Ellipsis, *[slice(0, l) for l in spatial])

        # kernel spectrum G: (c_out, c_in | 1, *f)
        w = kernel[(slice(None), slice(None), *crop)].to(cdtype)
        idx = _tap_index(tuple(w.shape[2:]), n, before, x.device)
        g = w.new_zeros((*w.shape[:2], *n))
        g[(slice(None), slice(None), *idx)] = w
        G = torch.fft.rfftn(g, dim=dims)
        del g

        need_x_grad, need_k_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if chunk_size is None:
            chunk_size = max(1, DEFAULT_CHUNK_ELEMENTS // math.prod(n))
        blocks = _chunks(b, c_in, chunk_size, separable)

        out = x.new_empty((b, c_out, *spatial), dtype=out_dtype)
        X_all = None
        if need_k_grad:
            X_all = G.new_empty((b, c_in, *G.shape[2:]))
        for bs, cs in blocks:
            X = torch.fft.rfftn(x[bs, cs].to(cdtype), s=n, dim=dims)
            if X_all is not None:
                X_all[bs, cs] = X
            if separable:
                Y = X.mul_(G[cs, 0]) if X_all is None else X * G[cs, 0]
                oc = cs
            else:
                Y = _mix(X, G, "bo")
                oc = slice(None)
            out[bs, oc] = torch.fft.irfftn(Y, s=n, dim=dims)[out_crop]
            del X, Y
        if bias is not None:
            out += bias.to(out_dtype).view(c_out, *([1] * d))

        ctx.geom = (causal, separable, chunk_size, n, crop, before, spatial, cdtype)
        ctx.dtypes = (x.dtype, kernel.dtype, None if bias is None else bias.dtype)
        ctx.kshape = tuple(kernel.shape)
        ctx.save_for_backward(X_all, G if need_x_grad else None)
        ctx.idx = idx
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        causal, separable, chunk_size, n, crop, before, spatial, cdtype = ctx.geom
        x_dtype, k_dtype, b_dtype = ctx.dtypes
        X_all, G = ctx.saved_tensors
        idx = ctx.idx
        need_x, need_k, need_b = ctx.needs_input_grad[:3]
        d = len(spatial)
        dims = tuple(range(2, 2 + d))
        b = grad_out.shape[0]
        c_out, c_in = ctx.kshape[0], (ctx.kshape[0] if separable else ctx.kshape[1])
        out_crop = (Ellipsis, *[slice(0, l) for l in spatial])

        grad_x = grad_k = grad_b = None
        if need_b:
            grad_b = grad_out.sum(dim=(0, *dims)).to(b_dtype)
        if need_x or need_k:
            if need_x:
                grad_x = grad_out.new_empty((b, c_in, *spatial), dtype=x_dtype)
                Gc = G.conj()
            GG = None
            if need_k:
                shape = (c_out, 1) if separable else (c_out, c_in)
                GG = X_all.new_zeros((*shape, *X_all.shape[2:]))
            for bs, cs in _chunks(b, c_in, chunk_size, separable):
                oc = cs if separable else slice(None)
                GY = torch.fft.rfftn(grad_out[bs, oc].to(cdtype), s=n, dim=dims)
                if need_k:
                    X = X_all[bs, cs]
                    if separable:
                        GG[cs, 0] += (X.conj() * GY).sum(0)
                    else:
                        GG += _mix(GY, X.conj(), "oi")
                if need_x:
                    if separable:
                        GX = GY.mul_(Gc[cs, 0])
                    else:
                        GX = _mix(GY, Gc.transpose(0, 1), "bo")
                    grad_x[bs, cs] = torch.fft.irfftn(GX, s=n, dim=dims)[out_crop]
                    del GX
                del GY
            if need_k:
                gg = torch.fft.irfftn(GG, s=n, dim=dims)
                gw = gg[(slice(None), slice(None), *idx)]
                if any(s.start != 0 or s.stop != k for s, k in zip(crop, ctx.kshape[2:])):
                    full = gw.new_zeros(ctx.kshape)
                    full[(slice(None), slice(None), *crop)] = gw
                    gw = full
                grad_k = gw.to(k_dtype)
        return grad_x, grad_k, grad_b, None, None, None


def fft_conv(
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    causal: bool = False,
    separable: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Size-preserving N-D convolution (1D/2D/3D) computed with real FFTs.

    Same result as :func:`~ccnn.nn.functional.direct.direct_conv` (up to rounding); the backward
    is computed with FFTs from spectra saved in the forward.

    Args:
        x: ``(b, c_in, *l)``.
        kernel: ``(c_out, c_in, *k)`` dense, or ``(c, 1, *k)`` depthwise when ``separable``.
            ``k`` may exceed ``l`` (e.g. CKConv kernels of size ``l`` or ``2l - 1``).
        bias: ``(c_out,)`` or None.
        causal: left-pad ``k - 1`` (1D only); otherwise centred like ``padding='same'``.
        separable: depthwise convolution (``groups = c``).
        chunk_size: rows (``b · c_in`` pairs) transformed at once; default keeps
            ``rows · prod(n)`` around ``DEFAULT_CHUNK_ELEMENTS``.

    Shapes: ``(b, c_in, *l) -> (b, c_out, *l)``; float16/bfloat16 in → same dtype out
    (computed in float32).
    """
    check_conv_args(x, kernel, separable, causal)
    if bias is not None and tuple(bias.shape) != (kernel.shape[0],):
        raise OptionError(f"bias must have shape ({kernel.shape[0]},), got {tuple(bias.shape)}")
    if chunk_size is not None and chunk_size < 1:
        raise OptionError(f"chunk_size must be a positive number of rows, got {chunk_size}")
    return _FFTConv.apply(x, kernel, bias, causal, separable, chunk_size)
