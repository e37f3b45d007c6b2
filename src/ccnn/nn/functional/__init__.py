"""Pure functions: direct and FFT convolution, padding, kernel grids."""

from ccnn.nn.functional.direct import direct_conv, same_padding
from ccnn.nn.functional.dispatch import conv_nd

__all__ = ["conv_nd", "direct_conv", "same_padding"]
