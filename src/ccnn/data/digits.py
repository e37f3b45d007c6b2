"""scikit-learn's 8x8 handwritten digits: real data that ships offline (the main job).

1,797 images, 10 classes, pixel values 0..16. Fixed stratified split 70/10/20
(train/val/test, seed 0). ``data_type=sequence`` → ``(1, 64)`` row-major sequences;
``default`` → ``(1, 8, 8)`` images. Inputs are scaled to [0, 1] then standardised with the
training-set mean/std. ``augment`` adds random ±1 pixel shifts (images and sequences).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.utils.data import TensorDataset

from ccnn.data.base import (
    DATASETS,
    DataOptions,
    DatasetMeta,
    DatasetSplits,
    check_data_type,
    stratified_split,
)
from ccnn.data.transforms import ImageBatchTransform


@DATASETS.register("Digits", "digits")
class Digits:
    """sklearn ``load_digits`` as images or sequences."""

    params: ClassVar[tuple[str, ...]] = ()
    embedded: ClassVar[bool] = True  # no files: dataset.data_dir means nothing

    def meta(self, opts: DataOptions) -> DatasetMeta:
        check_data_type(opts, ("default", "sequence"))
        if opts.data_type == "sequence":
            return DatasetMeta(1, 10, 1, (1, 64), "sequence")
        return DatasetMeta(1, 10, 2, (1, 8, 8), "default")

    def load(self, opts: DataOptions) -> DatasetSplits:
        from sklearn.datasets import load_digits

        meta = self.meta(opts)
        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (n, 1, 8, 8)
        y = torch.tensor(bunch.target, dtype=torch.long)
        train, val, test = stratified_split(y, (0.7, 0.1, 0.2), seed=0)
        mean, std = x[train].mean().item(), x[train].std().item()
        transform = ImageBatchTransform(
            mean=(mean,),
            std=(std,),
            augment="shift1" if opts.augment else None,
            sequence=opts.data_type == "sequence",
        )
        return DatasetSplits(
            train=TensorDataset(x[train], y[train]),
            val=TensorDataset(x[val], y[val]),
            test=TensorDataset(x[test], y[test]),
            meta=meta,
            batch_transform=transform,
        )
