"""Choice between direct and FFT convolution (placeholder until the FFT path lands)."""

from __future__ import annotations

import torch

from ccnn.nn.functional.direct import direct_conv


def conv_nd(
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    causal: bool = False,
    separable: bool = False,
    use_fft: bool | None = None,
) -> torch.Tensor:
    """Size-preserving N-D convolution; ``use_fft`` None chooses by cost."""
    return direct_conv(x, kernel, bias, causal=causal, separable=separable)
