"""Lightning data module wrapping any registered dataset family."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from ccnn.data.base import (
    DataConfigError,
    DataOptions,
    DatasetMeta,
    DatasetSplits,
    get_meta,
    load_splits,
)
from ccnn.errors import OptionError


def default_num_workers(requested: int) -> int:
    """``-1`` means ``cpu_count // 4`` (the published default); never negative."""
    if requested is None or requested < 0:
        return max(0, (os.cpu_count() or 1) // 4)
    return requested


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed that depends only on the run's ``seed``, the epoch and the process rank."""
    digest = hashlib.sha256(f"{seed}/{epoch}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class EpochShuffle(Sampler[int]):
    """Random order of ``n`` examples that depends only on ``(seed, epoch)``.

    The permutation of epoch ``e`` is the same whether the run got there without a break or was
    resumed from a checkpoint, which is what makes resumed runs bit-identical. Lightning calls
    :meth:`set_epoch` before every epoch; without it, each new iteration moves to the next epoch.
    :attr:`generator` (re-seeded per epoch too) is handed to the ``DataLoader`` so its worker
    seeds follow the same rule.

    With ``world > 1`` processes, global batch ``k`` is the same ``world * batch`` examples a
    single process would take, and process ``rank`` gets its ``rank``-th contiguous share of
    ``batch`` examples; an incomplete last global batch is shared evenly when it divides by
    ``world`` and left out otherwise (every process must take the same number of steps).
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world: int = 1, batch: int = 1):
        self.n, self.seed, self.epoch = int(n), int(seed), 0
        self.rank, self.world, self.batch = int(rank), int(world), int(batch)
        self.generator = torch.Generator()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.generator.manual_seed(epoch_seed(self.seed, epoch, rank=-1 - self.rank))
        order = torch.randperm(
            self.n, generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        )
        return iter(self._share(order).tolist())

    def _share(self, order: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return order
        g = self.world * self.batch
        full = (self.n // g) * g
        mine = order[:full].view(-1, self.world, self.batch)[:, self.rank].reshape(-1)
        tail = order[full:]
        if len(tail) % self.world == 0 and len(tail):
            mine = torch.cat([mine, tail.view(self.world, -1)[self.rank]])
        return mine

    def __len__(self) -> int:
        return len(self._share(torch.arange(self.n)))


class CCNNDataModule(L.LightningDataModule):
    """Loads a dataset family; applies its batch transform on the training device.

    ``meta`` is available right after construction (no files are read), so networks can be
    built before ``setup``. ``splits`` wraps datasets already in memory (the array API).
    The training order of each epoch depends only on ``seed`` and the epoch
    (:class:`EpochShuffle`).
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
        seed: int = 0,
    ):
        super().__init__()
        if (opts is None) == (splits is None):
            raise OptionError("give either dataset options or ready-made splits")
        self.opts = opts
        self.batch_size = batch_size
        self.test_batch_size = test_batch_size or batch_size
        self.num_workers = default_num_workers(num_workers)
        self.pin_memory = pin_memory
        self.drop_last = drop_last
        self.seed = int(seed)
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

    def _world(self) -> tuple[int, int]:
        """``(rank, world size)`` of the process this module serves."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, ds, batch_size: int, shuffle: bool, drop_last: bool = False) -> DataLoader:
        """``batch_size`` is the global batch; with several processes each takes its share
        (training) or every ``world``-th example (evaluation)."""
        rank, world = self._world()
        if batch_size % world:
            raise DataConfigError(
                f"the batch size {batch_size} is the global batch over all processes and must be "
                f"divisible by their number ({world}); change train.batch_size"
            )
        batch_size //= world
        sampler: Sampler[int] | None = None
        if shuffle:
            sampler = EpochShuffle(len(ds), self.seed, rank, world, batch_size)
        elif world > 1:
            sampler = list(range(rank, len(ds), world))  # type: ignore[assignment]
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=sampler,
            generator=getattr(sampler, "generator", None),
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
                raise OptionError(
                    f"The checkpoint's dataset state '{key}' differs from this data module's "
                    "(e.g. a different pMNIST permutation). Load the checkpoint with the same "
                    "dataset options and seed it was trained with."
                )
