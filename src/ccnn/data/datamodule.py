"""Lightning data module wrapping any registered dataset family."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from ccnn.data.base import DataOptions, DatasetMeta, DatasetSplits, get_meta, load_splits


def default_num_workers(requested: int) -> int:
    """``-1`` means ``cpu_count // 4`` (the published default); never negative."""
    if requested is None or requested < 0:
        return max(0, (os.cpu_count() or 1) // 4)
    return requested


class CCNNDataModule(L.LightningDataModule):
    """Loads a dataset family; applies its batch transform on the training device.

    ``meta`` is available right after construction (no files are read), so networks can be
    built before ``setup``. ``splits`` wraps datasets already in memory (the array API).
    """

    def __init__(
        self,
        opts: DataOptions | None,
        batch_size: int,
        test_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        splits: DatasetSplits | None = None,
        drop_last: bool = False,
    ):
        super().__init__()
        if (opts is None) == (splits is None):
            raise ValueError("give either dataset options or ready-made splits")
        self.opts = opts
        self.batch_size = batch_size
        self.test_batch_size = test_batch_size or batch_size
        self.num_workers = default_num_workers(num_workers)
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.meta: DatasetMeta = splits.meta if splits is not None else get_meta(opts)
        self.splits: DatasetSplits | None = splits
        self._restored_state: dict[str, Any] | None = None

    def prepare_data(self) -> None:
        """Download/extract/cache once (Lightning calls this on one process per node first)."""
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = load_splits(self.opts)
            if self._restored_state:
                self._check_state(self._restored_state)

    def _loader(self, ds, batch_size: int, shuffle: bool, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=drop_last,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches; with ``drop_last`` the incomplete last batch of each epoch is left
        out (unless the whole split is smaller than one batch)."""
        self.setup()
        drop = self.drop_last and len(self.splits.train) >= self.batch_size
        return self._loader(self.splits.train, self.batch_size, shuffle=True, drop_last=drop)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.splits.val, self.test_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.splits.test, self.test_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        self.setup()
        transform = self.splits.batch_transform
        if transform is None:
            return batch
        x, y = batch[0], batch[1]
        training = bool(self.trainer is not None and self.trainer.training)
        return (transform(x, training), y, *batch[2:])

    # -- state that must travel with checkpoints (e.g. the pMNIST permutation) --------------
    def state_dict(self) -> dict[str, Any]:
        self.setup()
        return dict(self.splits.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restored_state = state
        if self.splits is not None:
            self._check_state(state)

    def _check_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            mine = self.splits.state.get(key)
            same = torch.equal(mine, value) if torch.is_tensor(value) else mine == value
            if not same:
                raise ValueError(
                    f"The checkpoint's dataset state '{key}' differs from this data module's "
                    "(e.g. a different pMNIST permutation). Load the checkpoint with the same "
                    "dataset options and seed it was trained with."
                )
