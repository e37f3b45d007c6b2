"""Cost-based choice between direct (spatial) and FFT convolution.

Legend: b batch · c channels (``i`` in, ``o`` out) · k kernel extent · l spatial extent ·
n FFT extent · f frequency bins.

The model is deliberately small (a handful of constants per device type):

* direct: ``t = a · b·o·(i/groups)·∏l·∏k + m · b·(i+o)·∏l`` (multiply-adds plus a per-element
  memory/overhead term). On CPU PyTorch's *depthwise* backward is ~25× slower per MAC than its
  forward, so forward-only and forward+backward use separate constants.
* FFT: ``t = Σ_transforms rows · (N · (φ · log2 N + ε) + ρ) + μ · b·i·o·∏f`` (for dense kernels the
  per-bin channel mixing is a complex batched matmul), ``N = ∏n``; the backward doubles the
  number of transforms and adds two mixing products.

CPU constants were fitted on a 2-core AMD EPYC (AVX2, torch 2.13, MKL FFT,
``torch.set_num_threads(2)``); see ``benchmarks/bench_conv.py``. CUDA constants are an
uncalibrated heuristic encoding "cuDNN is fast for small kernels, FFT wins for large ones".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ccnn.nn.functional.direct import check_conv_args, direct_conv
from ccnn.nn.functional.fftconv import fft_conv, fft_geometry

__all__ = ["conv_nd", "prefer_fft", "estimate_costs", "CostModel", "COST_MODELS"]


@dataclass(frozen=True)
class CostModel:
    """Seconds per unit of work (see the module docstring for the formulas)."""

    direct_mac_fwd: tuple[float, float]  # (depthwise, dense) s / MAC, forward only
    direct_mac_fwdbwd: tuple[float, float]  # (depthwise, dense) s / MAC, forward + backward
    direct_elem_fwd: float  # s / (input + output element), forward
    direct_elem_fwdbwd: float
    fft_nlogn: float  # φ: s / (row · N · log2 N)
    fft_elem: float  # ε: s / (row · N) for padding, products and copies
    fft_row: float  # ρ: s / row transform (per-transform overhead, dominant for small N)
    fft_mix: float  # μ: s / complex MAC in the dense channel mixing
    fft_call: float  # fixed overhead of the FFT path (kernel spectrum, python)


COST_MODELS: dict[str, CostModel] = {
    "cpu": CostModel(
        direct_mac_fwd=(25e-12, 12e-12),
        direct_mac_fwdbwd=(600e-12, 80e-12),
        direct_elem_fwd=0.5e-9,
        direct_elem_fwdbwd=3e-9,
        fft_nlogn=0.12e-9,
        fft_elem=0.3e-9,
        fft_row=2e-6,
        fft_mix=0.16e-9,
        fft_call=0.3e-3,
    ),
    "cuda": CostModel(
        direct_mac_fwd=(1e-12, 0.2e-12),
        direct_mac_fwdbwd=(4e-12, 0.6e-12),
        direct_elem_fwd=2e-12,
        direct_elem_fwdbwd=6e-12,
        fft_nlogn=2e-12,
        fft_elem=10e-12,
        fft_row=0.0,
        fft_mix=2e-12,
        fft_call=50e-6,
    ),
}


def estimate_costs(
    x_shape: tuple[int, ...] | torch.Size,
    kernel_shape: tuple[int, ...] | torch.Size,
    separable: bool,
    device: torch.device | str = "cpu",
    *,
    causal: bool = False,
    needs_grad: bool = True,
) -> tuple[float, float]:
    """Estimated seconds ``(direct, fft)`` of one convolution (forward, + backward if asked).

    Shapes: ``x_shape = (b, c_in, *l)``, ``kernel_shape = (c_out, c_in | 1, *k)``.
    """
    dev = torch.device(device).type
    cm = COST_MODELS.get(dev, COST_MODELS["cuda" if dev != "cpu" else "cpu"])
    b, c_in, *spatial = (int(s) for s in x_shape)
    c_out, c_in_g, *ks = (int(s) for s in kernel_shape)
    vol = math.prod(spatial)
    kind = 0 if separable else 1
    passes = 2 if needs_grad else 1

    macs = b * c_out * c_in_g * vol * math.prod(ks)
    elems = b * (c_in + c_out) * vol
    if needs_grad:
        direct = cm.direct_mac_fwdbwd[kind] * macs + cm.direct_elem_fwdbwd * elems
    else:
        direct = cm.direct_mac_fwd[kind] * macs + cm.direct_elem_fwd * elems

    _, n, _ = fft_geometry(tuple(spatial), tuple(ks), causal)
    big_n = math.prod(n)
    rows = passes * (b * c_in + b * c_out + c_out * c_in_g)
    per_row = big_n * (cm.fft_nlogn * math.log2(max(big_n, 2)) + cm.fft_elem) + cm.fft_row
    fft = rows * per_row + cm.fft_call
    if not separable:
        bins = big_n // n[-1] * (n[-1] // 2 + 1)
        fft += (3 if needs_grad else 1) * cm.fft_mix * b * c_in * c_out * bins
    return direct, fft


def prefer_fft(
    x_shape: tuple[int, ...] | torch.Size,
    kernel_shape: tuple[int, ...] | torch.Size,
    separable: bool,
    device: torch.device | str = "cpu",
    *,
    causal: bool = False,
    needs_grad: bool = True,
) -> bool:
    """True when the FFT path is estimated to be faster (see :func:`estimate_costs`)."""
    direct, fft = estimate_costs(
        x_shape, kernel_shape, separable, device, causal=causal, needs_grad=needs_grad
    )
    return fft < direct


def conv_nd(
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    causal: bool = False,
    separable: bool = False,
    use_fft: bool | None = None,
) -> torch.Tensor:
    """Size-preserving N-D convolution; ``use_fft`` True/False forces a path, None chooses by cost.

    The automatic choice assumes a backward pass when autograd will record this call.

    Shapes: ``(b, c_in, *l) -> (b, c_out, *l)`` with ``kernel (c_out, c_in | 1, *k)``.
    """
    check_conv_args(x, kernel, separable, causal)
    if use_fft is None:
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or kernel.requires_grad or (bias is not None and bias.requires_grad)
        )
        use_fft = prefer_fft(
            x.shape, kernel.shape, separable, x.device, causal=causal, needs_grad=needs_grad
        )
    if use_fft:
        return fft_conv(x, kernel, bias, causal=causal, separable=separable)
    return direct_conv(x, kernel, bias, causal=causal, separable=separable)
