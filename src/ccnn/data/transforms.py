"""Batched, on-device input transforms (normalisation, augmentation, image → sequence).

Legend: ``b`` batch · ``c`` channels · ``h, w`` image height/width · ``l`` sequence length.

Everything here works on whole batches already on the training device, so datasets can keep
their examples compactly (``uint8``) on the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from ccnn.errors import OptionError


def random_crop_flip(
    x: torch.Tensor, padding: int, mode: str = "symmetric", flip: bool = True
) -> torch.Tensor:
    """Per-example random crop after padding (``(b, c, h, w)``), plus random horizontal flip.

    ``mode='symmetric'`` mirrors the border including the edge pixel (torchvision's
    ``padding_mode='symmetric'``); ``'constant'`` pads with zeros.
    """
    b, _, h, w = x.shape
    if padding > 0:
        if mode == "symmetric":
            # symmetric (edge-including) padding = reflect padding of an edge-extended image
            x = torch.cat([x[..., :padding].flip(-1), x, x[..., -padding:].flip(-1)], dim=-1)
            x = torch.cat([x[..., :padding, :].flip(-2), x, x[..., -padding:, :].flip(-2)], dim=-2)
        else:
            x = F.pad(x, (padding,) * 4, mode=mode)
        oy = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
        ox = torch.randint(0, 2 * padding + 1, (b,), device=x.device)
        rows = oy[:, None] + torch.arange(h, device=x.device)  # (b, h)
        cols = ox[:, None] + torch.arange(w, device=x.device)  # (b, w)
        bidx = torch.arange(b, device=x.device)[:, None, None]
        x = x.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
        x = x.permute(0, 3, 1, 2).contiguous()
    if flip:
        do_flip = torch.rand(b, device=x.device) < 0.5
        x = torch.where(do_flip[:, None, None, None], x.flip(-1), x)
    return x


def resize_images(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(b, c, h, w)`` float images, antialiased when downsampling.

    ``align_corners=False`` (pixel areas are preserved), as torchvision's ``Resize``.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def rows_to_sequence(x: torch.Tensor) -> torch.Tensor:
    """``(b, c, h, w) -> (b, c*w, h)``: one step per image row, features = the row of each channel.

    Feature ``i*w + j`` of step ``r`` is channel ``i``, column ``j`` of row ``r`` (the rows of the
    channels concatenated), the layout of noise-padded CIFAR-10 (Chang et al., 2019).
    """
    return rearrange(x, "b c h w -> b (c w) h")


def pad_with_noise(
    x: torch.Tensor, length: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Append i.i.d. standard-normal steps to ``(b, c, l)`` sequences up to ``length`` steps."""
    b, c, l = x.shape
    if length < l:
        raise OptionError(f"cannot noise-pad a sequence of length {l} to {length}")
    noise = torch.randn(
        (b, c, length - l), generator=generator, device=x.device, dtype=x.dtype
    )  # (b, c, length - l)
    return torch.cat([x, noise], dim=-1)  # (b, c, length)


class ImageBatchTransform:
    """``uint8``/float images → normalised float images or sequences, with optional augmentation.

    Args:
        mean, std: per-channel statistics in the [0, 1] scale.
        augment: ``None``, ``"crop_flip"`` (pad-4 symmetric crop + flip), ``"shift1"``
            (±1 pixel random shift, no flip) or ``"flip"``.
        sequence: flatten ``(c, h, w)`` into ``(c, h*w)`` after augmentation.
        scale: divide integer inputs by this (255 for ``uint8`` images).
        crop_padding: padding of ``"crop_flip"``.
        size: resize images to this size first (bilinear, antialiased; see
            :func:`resize_images`), e.g. for cross-resolution experiments.
        permutation: a fixed permutation of the sequence positions, applied after flattening
            (permuted MNIST). Requires ``sequence`` or ``noise_pad_length``.
        noise_pad_length: if set, images become row sequences ``(c*w, h)``
            (:func:`rows_to_sequence`) padded with standard-normal noise steps to this length
            (noise-padded CIFAR-10). In training every call draws fresh noise from the global
            RNG; in evaluation the noise comes from a generator re-seeded with ``noise_seed`` at
            every call, so validation/test results are reproducible for a fixed batch size.

    Order: to float → resize → normalise → augment (training only) → sequence layout → permute.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        augment: str | None = None,
        sequence: bool = False,
        scale: float = 255.0,
        crop_padding: int = 4,
        *,
        size: int | tuple[int, int] | None = None,
        permutation: torch.Tensor | None = None,
        noise_pad_length: int | None = None,
        noise_seed: int = 0,
    ):
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.augment, self.sequence, self.scale = augment, sequence, scale
        self.crop_padding = crop_padding
        self.size = size
        if permutation is not None and not (sequence or noise_pad_length):
            raise OptionError("a permutation needs sequence=True or noise_pad_length")
        self.permutation = permutation
        self.noise_pad_length, self.noise_seed = noise_pad_length, noise_seed
        self._eval_generators: dict[Any, torch.Generator] = {}

    def __call__(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        if not torch.is_floating_point(x):
            x = x.float() / self.scale
        if self.size is not None:
            x = resize_images(x, self.size)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        x = (x - self.mean.to(x.device).view(shape)) / self.std.to(x.device).view(shape)
        if training and self.augment:
            if self.augment == "crop_flip":
                x = random_crop_flip(x, self.crop_padding, "symmetric", flip=True)
            elif self.augment == "shift1":
                x = random_crop_flip(x, 1, "constant", flip=False)
            elif self.augment == "flip":
                x = random_crop_flip(x, 0, flip=True)
            else:
                raise OptionError(f"unknown augmentation {self.augment!r}")
        if self.noise_pad_length:
            generator = None if training else self._eval_generator(x.device)
            x = pad_with_noise(rows_to_sequence(x), self.noise_pad_length, generator)
        elif self.sequence:
            x = rearrange(x, "b c h w -> b c (h w)")
        if self.permutation is not None:
            x = x[..., self.permutation.to(x.device)]
        return x

    def __getstate__(self) -> dict[str, Any]:  # generators are rebuilt lazily after unpickling
        state = dict(self.__dict__)
        state["_eval_generators"] = {}
        return state

    def _eval_generator(self, device: torch.device) -> torch.Generator:
        g = self._eval_generators.get(device)
        if g is None:
            g = self._eval_generators[device] = torch.Generator(device=device)
        return g.manual_seed(self.noise_seed)


def crop_padding(size: int) -> int:
    """Random-crop padding for a ``size``-pixel image: 4 at 32 (CIFAR), scaled proportionally."""
    return max(1, round(size / 8))
