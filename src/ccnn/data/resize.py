"""Any 2D dataset family at another resolution (FlexConv's cross-resolution data).

Legend: b batch · c channels · h, w image sides.

:class:`ResizeTransform` / :class:`ResizedDataModule`: the family's own batch transform runs
first (normalisation, crop+flip augmentation at the native size), then images are resized on the
device to ``resolution`` (bilinear — antialiased when downsampling, like PIL — or
nearest/bicubic/area), with optional Gaussian blurs before (``blur_before``, σ in native
pixels) and after (``blur_after``, σ in pixels of the resized image) the resize.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from ccnn.data.base import BatchTransform, DataOptions
from ccnn.data.datamodule import CCNNDataModule
from ccnn.errors import OptionError

__all__ = ["INTERPOLATIONS", "ResizeTransform", "ResizedDataModule", "gaussian_blur", "resize"]

INTERPOLATIONS = ("bilinear", "nearest", "bicubic", "area")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Depthwise Gaussian blur of ``(b, c, h, w)`` with std ``sigma`` pixels (reflect padding)."""
    if sigma <= 0:
        return x
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()  # (k,)
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    if pad < radius:  # image smaller than the blur: zero-extend the kernel support
        x = F.pad(x, (pad,) * 4, mode="reflect")
        x = F.pad(x, (radius - pad,) * 4)
    else:
        x = F.pad(x, (radius,) * 4, mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # (b, c, h + 2r, w)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # (b, c, h, w)


def resize(x: torch.Tensor, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Resize ``(b, c, h, w)`` images to ``size x size`` (antialiased bilinear/bicubic when
    downsampling; ``align_corners=False``)."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    if interpolation not in INTERPOLATIONS:
        raise OptionError(
            f"Unknown interpolation {interpolation!r}; supported: {list(INTERPOLATIONS)}"
        )
    if interpolation in ("nearest", "area"):
        return F.interpolate(x, size=(size, size), mode=interpolation)
    down = size < min(x.shape[-2:])
    return F.interpolate(
        x, size=(size, size), mode=interpolation, align_corners=False, antialias=down
    )


class ResizeTransform:
    """Wraps a family's batch transform: ``inner`` first, then blur/resize/blur to ``size``.

    Shapes: ``(b, c, h, w) -> (b, c, size, size)``.
    """

    def __init__(
        self,
        inner: BatchTransform | None,
        size: int,
        interpolation: str = "bilinear",
        blur_before: float = 0.0,
        blur_after: float = 0.0,
    ):
        if interpolation not in INTERPOLATIONS:
            raise OptionError(
                f"Unknown interpolation {interpolation!r}; supported: {list(INTERPOLATIONS)}"
            )
        self.inner, self.size, self.interpolation = inner, int(size), interpolation
        self.blur_before, self.blur_after = blur_before, blur_after

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if self.inner is not None:
            x = self.inner(x, training)
        if not torch.is_floating_point(x):
            x = x.float()
        if x.dim() != 4:
            raise OptionError(f"resizing needs images (b, c, h, w), got {tuple(x.shape)}")
        x = gaussian_blur(x, self.blur_before)
        x = resize(x, self.size, self.interpolation)
        return gaussian_blur(x, self.blur_after)


class ResizedDataModule(CCNNDataModule):
    """A :class:`CCNNDataModule` whose 2D images are resized to ``resolution`` on the device.

    ``meta.input_shape`` reports the resized shape, so networks are built for it.
    :meth:`at_resolution` gives a copy at another resolution sharing the loaded data.
    """

    def __init__(
        self,
        opts: DataOptions,
        resolution: int,
        interpolation: str = "bilinear",
        blur_before: float = 0.0,
        blur_after: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(opts, **kwargs)
        if self.meta.data_dim != 2:
            raise OptionError(
                f"resizing needs 2D images; dataset {opts.name} ({opts.data_type}) is "
                f"{self.meta.data_dim}D"
            )
        if resolution < 1:
            raise OptionError(f"resolution must be >= 1, got {resolution}")
        self.native_meta = self.meta
        self.resolution, self.interpolation = int(resolution), interpolation
        self.blur_before, self.blur_after = blur_before, blur_after
        self._native_splits = None
        c = self.native_meta.input_shape[0]
        self.meta = replace(
            self.native_meta,
            input_shape=(c, self.resolution, self.resolution),
            extra={**self.native_meta.extra, "resolution": self.resolution},
        )

    def setup(self, stage: str | None = None) -> None:
        if self._native_splits is None:
            super().setup(stage)
            self._native_splits = self.splits
            transform = ResizeTransform(
                self._native_splits.batch_transform,
                self.resolution,
                self.interpolation,
                self.blur_before,
                self.blur_after,
            )
            self.splits = replace(self._native_splits, batch_transform=transform, meta=self.meta)

    def at_resolution(self, resolution: int) -> ResizedDataModule:
        """A copy at ``resolution`` (the loaded data is shared, nothing is re-read)."""
        other = copy.copy(self)
        other.resolution = int(resolution)
        c = self.native_meta.input_shape[0]
        other.meta = replace(
            self.native_meta,
            input_shape=(c, other.resolution, other.resolution),
            extra={**self.native_meta.extra, "resolution": other.resolution},
        )
        other.splits = None
        if self._native_splits is not None:
            transform = ResizeTransform(
                self._native_splits.batch_transform,
                other.resolution,
                self.interpolation,
                self.blur_before,
                self.blur_after,
            )
            other.splits = replace(self._native_splits, batch_transform=transform, meta=other.meta)
        other.trainer = None
        return other
