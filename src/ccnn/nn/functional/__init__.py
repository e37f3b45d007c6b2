"""Pure functions: direct and FFT convolution, padding, kernel grids."""

from ccnn.nn.functional.direct import direct_conv, same_padding
from ccnn.nn.functional.dispatch import conv_nd, estimate_costs, prefer_fft
from ccnn.nn.functional.fftconv import fft_conv, next_fast_len

__all__ = [
    "conv_nd",
    "direct_conv",
    "estimate_costs",
    "fft_conv",
    "next_fast_len",
    "prefer_fft",
    "same_padding",
]
