"""ImageNet-style class-folder datasets decoded with PIL (no torchvision).

Layout: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>``; classes are the sorted
sub-folder names of ``train/`` (``val/`` must use the same names). Images are returned as
``uint8`` tensors ``(3, s, s)``; :func:`normalize_batch` turns a batch into network inputs on the
training device (ImageNet mean/std), which keeps host→device copies 4× smaller.

Train augmentation: RandomResizedCrop(s, scale=(0.08, 1), ratio=(3/4, 4/3)) + horizontal flip.
Evaluation: Resize(⌊s·256/224⌋, shorter side; the longer side truncated) + CenterCrop(s) (offsets
rounded), i.e. Resize(256) + CenterCrop(224) at the default s = 224. Resampling is PIL's
(antialiased) bilinear; crop boxes follow the usual RandomResizedCrop sampling.

Randomness is a pure function of ``(seed, epoch, index)`` (:meth:`ImageFolderDataset.load`), so
the augmented version of an image does not depend on which process or worker loads it: a
2-process run sees exactly the batches of a 1-process run with the same global batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ccnn.data.base import DataConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_EXTENSIONS",
    "EpochKeySampler",
    "FakeImageDataset",
    "ImageFolderDataset",
    "IndexedView",
    "ShardSampler",
    "find_classes",
    "normalize_batch",
    "random_resized_crop_box",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def find_classes(root: str | os.PathLike) -> list[str]:
    """Sorted names of the class sub-folders of ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataConfigError(
            f"image folder {root} does not exist (expected <data-dir>/train, /val)"
        )
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise DataConfigError(f"no class sub-folders in {root}")
    return classes


def _scan(root: Path, classes: Sequence[str]) -> list[tuple[str, int]]:
    items = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            continue
        for dirpath, _, files in sorted(os.walk(folder, followlinks=True)):
            for f in sorted(files):
                if f.lower().endswith(IMG_EXTENSIONS):
                    items.append((os.path.join(dirpath, f), label))
    return items


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """``(left, top, w, h)`` of a random crop with area fraction in ``scale`` and aspect ratio
    (log-uniform) in ``ratio``; after 10 failed tries, the largest centred crop whose aspect
    ratio is clamped into ``ratio``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.uint8)  # (h, w, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (3, h, w)


class ImageFolderDataset(Dataset):
    """Class-folder image dataset; ``load(i, epoch)`` returns ``(uint8 (3, s, s), label)``.

    Args:
        root: a split folder (``.../train``) holding one sub-folder per class.
        train: random-resized-crop + flip (else resize + centre crop).
        image_size: output side ``s``.
        classes: class names (default: the sub-folders of ``root``).
        seed: augmentation seed.
    """

    epoch_aware = True

    def __init__(
        self,
        root: str | os.PathLike,
        train: bool,
        image_size: int = 224,
        classes: Sequence[str] | None = None,
        seed: int = 0,
    ):
        self.root = Path(root)
        self.classes = list(classes) if classes is not None else find_classes(self.root)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = _scan(self.root, self.classes)
        if not self.samples:
            raise DataConfigError(f"no images with extensions {IMG_EXTENSIONS} under {self.root}")
        self.targets = [y for _, y in self.samples]
        self.train, self.image_size, self.seed = train, image_size, seed
        self.resize_size = image_size * 256 // 224

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.load(index, 0)

    def load(self, index: int, epoch: int = 0) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        s = self.image_size
        if self.train:
            rng = np.random.default_rng([self.seed, epoch, index])
            left, top, w, h = random_resized_crop_box(img.width, img.height, rng)
            img = img.crop((left, top, left + w, top + h)).resize((s, s), Image.BILINEAR)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            r, (w, h) = self.resize_size, img.size
            size = (r, int(r * h / w)) if w <= h else (int(r * w / h), r)  # shorter side → r
            img = img.resize(size, Image.BILINEAR)
            left, top = round((img.width - s) / 2), round((img.height - s) / 2)
            img = img.crop((left, top, left + s, top + s))
        return _to_uint8_tensor(img), label


class FakeImageDataset(Dataset):
    """Random ``uint8`` images ``(c, s, s)`` and labels; sample ``i`` is a function of (seed, i)."""

    epoch_aware = False

    def __init__(
        self, length: int, num_classes: int, image_size: int, channels: int = 3, seed: int = 0
    ):
        self.length, self.num_classes = length, num_classes
        self.shape, self.seed = (channels, image_size, image_size), seed
        gen = torch.Generator().manual_seed(seed)
        self.targets = torch.randint(num_classes, (length,), generator=gen).tolist()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        x = torch.randint(0, 256, self.shape, generator=gen, dtype=torch.uint8)
        return x, self.targets[index]


class IndexedView(Dataset):
    """A subset view of ``base`` whose items may be requested as ``(epoch, i)``.

    Epoch-aware bases (``base.epoch_aware``) get the epoch forwarded to ``base.load``.
    """

    def __init__(self, base: Dataset, indices: Sequence[int] | torch.Tensor | None = None):
        self.base = base
        self.indices = None if indices is None else torch.as_tensor(indices).tolist()

    def __len__(self) -> int:
        return len(self.base) if self.indices is None else len(self.indices)  # type: ignore[arg-type]

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (0, key)
        j = i if self.indices is None else self.indices[i]
        if getattr(self.base, "epoch_aware", False):
            return self.base.load(j, epoch)
        return self.base[j]


class EpochKeySampler(Sampler):
    """Wraps a sampler (``DistributedSampler``) to yield ``(epoch, index)`` keys."""

    def __init__(self, sampler: Sampler):
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, int(i)) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` — every example exactly once over all ranks (eval)."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.length, self.rank, self.world_size = length, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def normalize_batch(
    x: torch.Tensor,
    training: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """``uint8 (b, 3, h, w)`` → float ``(x/255 − mean)/std`` (on ``x``'s device)."""
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s
