"""Kernel-grid helpers shared by every layer with a continuous or scalable kernel."""

from __future__ import annotations

from collections.abc import Sequence

from ccnn.errors import OptionError


def parse_resolution_scale(
    scale: float | Sequence[float] | None, data_dim: int
) -> tuple[float, ...] | None:
    """Normalise a resolution scale to one positive float per dim (``None`` if it is 1).

    Raises a ValueError naming the expected form for a wrong length or a non-positive value.
    """
    if scale is None:
        return None
    scales = (
        tuple(float(s) for s in scale)
        if isinstance(scale, Sequence)
        else (float(scale),) * data_dim
    )
    if len(scales) != data_dim or min(scales) <= 0:
        raise OptionError(f"resolution scale must be > 0 for each of {data_dim} dims, got {scale}")
    return None if all(s == 1.0 for s in scales) else scales
