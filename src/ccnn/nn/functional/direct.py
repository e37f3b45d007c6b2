"""Reference (direct, spatial-domain) N-D convolution with causal or centred padding.

Legend: b batch · c channels · k kernel extent · l/h/w spatial extents.

Convolution here is a *correlation* (as in ``torch.nn.functional.conv*d``): the kernel entry at
relative position +1 (the last one) multiplies ``x[t]`` in causal mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ccnn.errors import OptionError

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def same_padding(kernel_size: tuple[int, ...], causal: bool) -> list[int]:
    """``F.pad`` amounts (last dim first) that keep the spatial size.

    Causal (1D only): left-pad ``k - 1``. Centred: ``(k - 1) // 2`` before, the rest after
    (torch's ``padding='same'`` convention, also for even ``k``).
    """
    pad: list[int] = []
    for k in reversed(kernel_size):
        if causal:
            pad += [k - 1, 0]
        else:
            before = (k - 1) // 2
            pad += [before, k - 1 - before]
    return pad


def check_conv_args(x: torch.Tensor, kernel: torch.Tensor, separable: bool, causal: bool) -> int:
    data_dim = kernel.dim() - 2
    if data_dim not in _CONV:
        raise OptionError(
            f"kernel must be (c_out, c_in, *k) with 1-3 spatial dims, got {tuple(kernel.shape)}"
        )
    if x.dim() != kernel.dim():
        raise OptionError(
            f"input must be (b, c, *spatial) with {data_dim} spatial dim(s) to match the kernel "
            f"{tuple(kernel.shape)}, got {tuple(x.shape)}"
        )
    expected_in = kernel.shape[0] if separable else kernel.shape[1]
    if x.shape[1] != expected_in:
        raise OptionError(
            f"input has {x.shape[1]} channels, kernel {tuple(kernel.shape)} expects {expected_in}"
        )
    if causal and data_dim != 1:
        raise OptionError(
            f"causal convolution is only defined for 1D data, got data_dim={data_dim}"
        )
    return data_dim


def direct_conv(
    x: torch.Tensor,
    kernel: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    causal: bool = False,
    separable: bool = False,
) -> torch.Tensor:
    """Spatial convolution keeping the input size.

    Args:
        x: ``(b, c_in, *spatial)``.
        kernel: ``(c_out, c_in, *k)`` dense, or ``(c, 1, *k)`` depthwise when ``separable``.
        bias: ``(c_out,)`` or None.

    Shapes: ``(b, c_in, *s) -> (b, c_out, *s)``.
    """
    data_dim = check_conv_args(x, kernel, separable, causal)
    x = F.pad(x, same_padding(tuple(kernel.shape[2:]), causal))
    groups = x.shape[1] if separable else 1
    return _CONV[data_dim](x, kernel, bias, groups=groups)
