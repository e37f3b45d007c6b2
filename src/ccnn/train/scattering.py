"""Two-phase training of learnable scattering networks (plain PyTorch + DDP under torchrun).

Phase A ("head"): the extractor is frozen and run under ``no_grad``; only the head
(BatchNorm2d + Linear) trains — AdamW(lr_head, weight_decay), cosine over ``lr_epochs`` epochs,
early stopping after ``patience`` epochs without a better validation accuracy → ``head_acc``.
Phase B ("fine-tune"): the best Phase-A checkpoint is reloaded on every rank and re-evaluated
(``baseline_acc``), the extractor is unfrozen and everything trains with AdamW (extractor
``lr_extractor``, head ``lr_head``), cosine over ``epochs`` → ``finetune_acc`` (best epoch),
``finetune_gain = finetune_acc − baseline_acc`` and the filter drift ‖θ−θ₀‖, ‖θ−θ₀‖/‖θ₀‖ of the
extractor (θ₀ = its initialisation). ``joint`` skips Phase A; ``l2_penalty`` adds λ‖θ−θ₀‖².

Distributed: ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK; NCCL on GPU, gloo on CPU. Each rank
gets ``global_batch_size / world_size`` examples per step through a ``DistributedSampler``
(``set_epoch`` each epoch); evaluation shards the split without padding. Metrics are summed over
ranks (``all_reduce``) so every rank takes the same early-stopping and checkpoint decisions;
rank 0 writes, all ranks reload. The head's BatchNorm uses statistics of the global batch.

Checkpoints in ``save_dir`` (through :mod:`ccnn.files`: atomic, digest-verified, tensors only):
``phase_a_best.pt``, ``phase_a_last.pt``, ``phase_b_best.pt``, ``phase_b_last.pt``, and
``results.json`` (config, results, per-epoch curves; rewritten after every epoch). A ``last``
checkpoint holds model, optimiser, scheduler, early-stopping state, curves and partial results,
so ``resume`` continues an interrupted run exactly where it stopped. All randomness is a function
of ``(seed, epoch, rank)``, so a resumed run reproduces the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ccnn.data.imagefolder import (
    EpochKeySampler,
    FakeImageDataset,
    ImageFolderDataset,
    IndexedView,
    ShardSampler,
    find_classes,
    normalize_batch,
)
from ccnn.errors import OptionError
from ccnn.files import load_torch, save_torch, write_json
from ccnn.models import create_model
from ccnn.models.scattering_net import ScatteringNet
from ccnn.nn.batchnorm import to_global_batchnorm

__all__ = [
    "DistEnv",
    "ScatteringTrainConfig",
    "build_data",
    "dataset_labels",
    "init_distributed",
    "run",
    "stratified_subset",
]

DATASET_CHOICES = ("cifar10", "cifar100", "imagenet")
_NATIVE = {  # dataset → (registry family, classes, image side)
    "cifar10": ("CIFAR10", 10, 32),
    "cifar100": ("CIFAR100", 100, 32),
    "imagenet": ("ImageNet", 1000, 224),
}
RESULTS_FILE = "results.json"


@dataclass
class ScatteringTrainConfig:
    """Every option of ``train.py`` (the argparse flags, with ``-`` → ``_``)."""

    dataset: str = "cifar10"
    data_dir: str | None = None
    global_batch_size: int = 128
    lr_epochs: int = 20
    epochs: int = 100
    print_freq: int = 100
    n_blocks: int = 3
    L: int = 8
    kernel_size: int = 7
    lowpass_last: bool = False
    mixing_horizon: int | None = None
    modulus_type: str = "complex_modulus"
    global_avg_pool: bool = False
    train_size: float | None = None
    save_dir: str = "runs/scattering"
    lr_head: float = 1e-3
    lr_extractor: float = 1e-4
    weight_decay: float = 1e-4
    patience: int = 20
    workers: int = 8
    seed: int = 0
    resume: bool = False
    random_init: bool = False
    joint: bool = False
    l2_penalty: float = 0.0
    bf16: bool = False
    channels_last: bool = False
    fake_data: bool = False
    limit_batches: int | None = None
    image_size: int | None = None
    fuse: str = "auto"
    fake_train_size: int | None = None
    fake_val_size: int | None = None
    stop_after_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.dataset not in DATASET_CHOICES:
            raise OptionError(f"dataset must be one of {DATASET_CHOICES}, got {self.dataset!r}")
        if self.train_size is not None and self.train_size <= 0:
            raise OptionError(f"train_size must be > 0, got {self.train_size}")
        if (
            self.train_size is not None
            and self.train_size > 1
            and self.train_size != int(self.train_size)
        ):
            raise OptionError(f"train_size > 1 must be an integer count, got {self.train_size}")
        if self.epochs < 1 or (self.lr_epochs < 1 and not self.joint):
            raise OptionError(
                f"--epochs and --lr-epochs (unless --joint) must be >= 1, got {self.epochs} and "
                f"{self.lr_epochs}"
            )
        if self.global_batch_size < 1:
            raise OptionError(f"--global-batch-size must be >= 1, got {self.global_batch_size}")
        for name in ("n_blocks", "L", "kernel_size", "patience"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise OptionError(f"{flag} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size % 2 == 0:
            raise OptionError(f"--kernel-size must be odd, got {self.kernel_size}")
        if self.workers < 0:
            raise OptionError(f"--workers must be >= 0, got {self.workers}")
        if self.fuse not in ("auto", "on", "off"):
            raise OptionError(f"fuse must be auto|on|off, got {self.fuse!r}")
        if self.fake_data and self.data_dir:  # a paper command smoke-run with --fake-data
            warnings.warn(
                f"--data-dir {self.data_dir} is not read: --fake-data replaces the data",
                stacklevel=2,
            )
        for name in ("fake_train_size", "fake_val_size"):
            if getattr(self, name) is not None and not self.fake_data:
                flag = "--" + name.replace("_", "-")
                raise OptionError(
                    f"{flag} sizes the --fake-data sets; add --fake-data or remove it"
                )


# ----------------------------------------------------------------------------------------
# Distributed helpers
# ----------------------------------------------------------------------------------------
@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistEnv:
    """Process group from torchrun's environment (NCCL on GPU, gloo on CPU); else 1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if cuda else "gloo", device_id=device if cuda else None
        )
    return DistEnv(rank, world, local, device)


def _barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


# ----------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------
@dataclass
class ScatteringData:
    train: Dataset
    val: Dataset
    test: Dataset | None  # a separate test split (None when val is the reported split)
    num_classes: int
    in_channels: int
    image_size: int
    batch_transform: Callable[[torch.Tensor, bool], torch.Tensor]
    n_train_full: int


def dataset_labels(ds: Dataset) -> torch.Tensor:
    """Integer labels of a dataset: ``targets``/``labels``/``y`` (restricted to ``indices`` when
    the dataset has them), a TensorDataset's second tensor, a ``Subset``, else a full scan."""
    labels = None
    for attr in ("targets", "labels", "y"):
        if hasattr(ds, attr):
            labels = torch.as_tensor(getattr(ds, attr)).long().flatten()
            break
    if labels is None and hasattr(ds, "tensors"):
        labels = ds.tensors[1].long().flatten()
    if labels is not None:
        idx = getattr(ds, "indices", None)
        return labels if idx is None else labels[torch.as_tensor(idx).long()]
    if hasattr(ds, "dataset") and hasattr(ds, "indices"):
        return dataset_labels(ds.dataset)[torch.as_tensor(ds.indices).long()]
    return torch.tensor([int(ds[i][1]) for i in range(len(ds))])


def stratified_subset(
    labels: torch.Tensor, train_size: float | int | None, seed: int
) -> torch.Tensor:
    """Sorted indices of a stratified, seeded training subset.

    ``train_size ≤ 1``: that fraction of each class (at least one example per class);
    ``> 1``: that many examples in total, spread over classes in proportion to their sizes
    (largest remainders first). Depends only on ``(labels, train_size, seed)`` — identical on
    every rank.
    """
    n = len(labels)
    if train_size is None or train_size == 1:
        return torch.arange(n)
    classes, counts = labels.unique(sorted=True, return_counts=True)
    if train_size <= 1:
        take = torch.clamp((counts.double() * train_size).round().long(), min=1)
    else:
        total = int(train_size)
        if total > n:
            raise OptionError(f"train_size {total} exceeds the {n} training examples")
        exact = counts.double() * total / n
        take = exact.floor().long()
        order = torch.argsort(-(exact - take), stable=True)
        take[order[: total - int(take.sum())]] += 1
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for cls, k in zip(classes.tolist(), take.tolist()):
        idx = (labels == cls).nonzero().flatten()
        parts.append(idx[torch.randperm(len(idx), generator=gen)[:k]])
    return torch.cat(parts).sort().values


def build_data(cfg: ScatteringTrainConfig) -> ScatteringData:
    """Datasets for ``cfg.dataset`` (real or ``fake_data``), with the training subset applied."""
    family, num_classes, native = _NATIVE[cfg.dataset]
    size = cfg.image_size or native
    test = None
    transform: Callable[[torch.Tensor, bool], torch.Tensor] = normalize_batch
    if cfg.fake_data:
        b = cfg.global_batch_size
        n_train = cfg.fake_train_size or b * (cfg.limit_batches or 4)
        n_val = cfg.fake_val_size or b * (cfg.limit_batches or 2)
        train = FakeImageDataset(n_train, num_classes, size, seed=cfg.seed * 2 + 1)
        val = FakeImageDataset(n_val, num_classes, size, seed=cfg.seed * 2 + 2)
    elif cfg.dataset == "imagenet":
        root = Path(cfg.data_dir or "data/imagenet")
        classes = find_classes(root / "train")
        train = ImageFolderDataset(root / "train", True, size, classes, seed=cfg.seed)
        val = ImageFolderDataset(root / "val", False, size, classes, seed=cfg.seed)
        num_classes = len(classes)
    else:
        if cfg.image_size not in (None, native):
            raise OptionError(
                f"--image-size only applies to imagenet or --fake-data ({cfg.dataset} is {native}²)"
            )
        import ccnn.data.vision  # noqa: F401  (registers CIFAR10/CIFAR100)
        from ccnn.data.base import DATASETS, DataOptions

        splits = DATASETS.get(family).load(
            DataOptions(name=family, data_dir=cfg.data_dir, augment=True)
        )
        train, val = splits.train, splits.val
        test = splits.test if splits.test is not splits.val else None
        num_classes = splits.meta.num_classes
        if splits.batch_transform is not None:
            transform = splits.batch_transform
        else:
            transform = lambda x, training: x.float()  # noqa: E731
    idx = None
    if cfg.train_size is not None:
        idx = stratified_subset(dataset_labels(train), cfg.train_size, cfg.seed)
    return ScatteringData(
        train=IndexedView(train, idx),
        val=val,
        test=test,
        num_classes=num_classes,
        in_channels=3,
        image_size=size,
        batch_transform=transform,
        n_train_full=len(train),
    )


def _loader(
    ds: Dataset, sampler, batch_size: int, cfg: ScatteringTrainConfig, env: DistEnv
) -> DataLoader:
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=env.device.type == "cuda",
        persistent_workers=cfg.workers > 0,
        prefetch_factor=4 if cfg.workers > 0 else None,
        drop_last=False,
    )


# ----------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------
def _extractor_params(model: ScatteringNet) -> dict[str, torch.Tensor]:
    return dict(model.extractor.named_parameters())


def _drift(model: ScatteringNet, theta0: dict[str, torch.Tensor]) -> tuple[float, float]:
    """‖θ−θ₀‖ and ‖θ−θ₀‖/‖θ₀‖ over all extractor parameters."""
    d2 = n2 = 0.0
    for name, p in _extractor_params(model).items():
        d2 += float((p.detach().float() - theta0[name].float()).square().sum())
        n2 += float(theta0[name].float().square().sum())
    return math.sqrt(d2), math.sqrt(d2) / max(math.sqrt(n2), 1e-12)


def _l2_to_init(model: ScatteringNet, theta0: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum((p - theta0[n]).square().sum() for n, p in _extractor_params(model).items())


class _Trainer:
    def __init__(self, cfg: ScatteringTrainConfig, env: DistEnv):
        self.cfg, self.env = cfg, env
        if cfg.global_batch_size % env.world_size:
            raise OptionError(
                f"--global-batch-size {cfg.global_batch_size} is not divisible by WORLD_SIZE="
                f"{env.world_size}"
            )
        self.batch = cfg.global_batch_size // env.world_size
        self.save_dir = Path(cfg.save_dir)
        if env.is_main:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        _barrier(env)
        self.data = build_data(cfg)
        torch.manual_seed(cfg.seed)
        self.model = self._build_model()
        # θ₀ is a function of the config and seed: rebuilt identically on resume (not checkpointed)
        self.theta0 = {n: p.detach().clone() for n, p in _extractor_params(self.model).items()}
        self.amp = dict(device_type=env.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        self.epochs_run = 0  # epochs completed by this process (for --stop-after-epochs)
        self.t0 = time.time()
        d = self.data
        train_sampler = DistributedSampler(
            d.train,
            num_replicas=env.world_size,
            rank=env.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=False,
        )
        self.train_sampler = EpochKeySampler(train_sampler)
        self.train_loader = _loader(d.train, self.train_sampler, self.batch, cfg, env)
        self.val_loader = _loader(
            d.val, ShardSampler(len(d.val), env.rank, env.world_size), self.batch, cfg, env
        )
        self.test_loader = None
        if d.test is not None:
            self.test_loader = _loader(
                d.test, ShardSampler(len(d.test), env.rank, env.world_size), self.batch, cfg, env
            )
        spec = self.model.spec
        self.results: dict[str, Any] = {
            "n_params_extractor": spec.n_params_extractor,
            "n_params_classifier": spec.n_params_classifier,
            "n_params_linear": spec.n_params_linear,
            "n_params_total": spec.n_params_total,
            "n_params_trainable_phase_a": spec.n_params_classifier,
            "n_params_trainable": spec.n_params_total,
            "final_channels": spec.channels[-1],
            "final_spatial": list(spec.spatial),
            "channels": spec.channels,
            "groups": spec.groups,
            "num_classes": d.num_classes,
            "image_size": d.image_size,
            "train_samples": len(d.train),
            "train_samples_full": d.n_train_full,
            "val_samples": len(d.val),
            "world_size": env.world_size,
            "global_batch_size": cfg.global_batch_size,
            "per_rank_batch_size": self.batch,
            "head_acc": None,
            "head_epoch": None,
            "baseline_acc": None,
            "finetune_acc": None,
            "finetune_epoch": None,
            "finetune_gain": None,
            "drift": None,
            "relative_drift": None,
            "drift_final": None,
            "relative_drift_final": None,
            "completed": False,
        }
        self.curves: dict[str, list[dict]] = {"phase_a": [], "phase_b": []}

    # -- model ----------------------------------------------------------------------------
    def _build_model(self) -> ScatteringNet:
        cfg, d = self.cfg, self.data
        model = create_model(
            "scattering_net",
            num_classes=d.num_classes,
            in_channels=d.in_channels,
            input_size=d.image_size,
            n_blocks=cfg.n_blocks,
            L=cfg.L,
            kernel_size=cfg.kernel_size,
            modulus_type=cfg.modulus_type,
            lowpass_last=cfg.lowpass_last,
            mixing_horizon=cfg.mixing_horizon,
            global_avg_pool=cfg.global_avg_pool,
            init="random" if cfg.random_init else "scattering",
            fuse={"auto": "auto", "on": True, "off": False}[cfg.fuse],
        )
        if self.env.distributed:
            to_global_batchnorm(model)
        model = model.to(self.env.device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def _inputs(self, x: torch.Tensor, training: bool) -> torch.Tensor:
        x = x.to(self.env.device, non_blocking=True)
        x = self.data.batch_transform(x, training)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # -- checkpoints ----------------------------------------------------------------------
    def _path(self, phase: str, kind: str) -> Path:
        return self.save_dir / f"phase_{phase.lower()}_{kind}.pt"

    def _save(self, phase: str, kind: str, state: dict) -> None:
        if self.env.is_main:
            save_torch(state, self._path(phase, kind))

    def _load_model(self, phase: str, kind: str) -> dict:
        ckpt = load_torch(self._path(phase, kind), map_location=self.env.device)
        self.model.load_state_dict(ckpt["model"])
        return ckpt

    def write_results(self) -> dict:
        out = {
            "config": dataclasses.asdict(self.cfg),
            "results": self.results,
            "curves": self.curves,
        }
        if self.env.is_main:
            write_json(self.save_dir / RESULTS_FILE, out)
        return out

    # -- one epoch ------------------------------------------------------------------------
    def _seed_epoch(self, phase: str, epoch: int) -> None:
        # every random draw (batch augmentation, worker seeds) depends on (seed, phase, epoch, rank)
        torch.manual_seed(
            self.cfg.seed * 1_000_003 + (phase == "B") * 100_003 + epoch * 101 + self.env.rank
        )

    def _limit(self, loader: Iterable) -> Iterable:
        n = self.cfg.limit_batches
        for i, batch in enumerate(loader):
            if n is not None and i >= n:
                break
            yield batch

    def train_epoch(self, phase: str, epoch: int, forward: nn.Module, optimizer) -> dict:
        cfg, env = self.cfg, self.env
        self._seed_epoch(phase, epoch)
        self.train_sampler.set_epoch(epoch if phase == "A" else 10_000 + epoch)
        self.model.train()
        if phase == "A":
            self.model.extractor.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=env.device)  # loss·n, correct, n
        n_steps = (
            len(self.train_loader)
            if cfg.limit_batches is None
            else min(cfg.limit_batches, len(self.train_loader))
        )
        tic = time.time()
        for it, (x, y) in enumerate(self._limit(self.train_loader)):
            x, y = self._inputs(x, True), y.to(env.device, non_blocking=True)
            with torch.autocast(**self.amp):
                if phase == "A":
                    with torch.no_grad():
                        feats = self.model.extractor(x)
                    logits = forward(feats)
                else:
                    logits = forward(x)
                loss = F.cross_entropy(logits.float(), y)
            total = loss
            if phase == "B" and cfg.l2_penalty > 0:
                total = loss + cfg.l2_penalty * _l2_to_init(self.model, self.theta0)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            with torch.no_grad():
                sums += torch.stack(
                    [
                        loss.detach().double() * len(y),
                        (logits.argmax(1) == y).sum().double(),
                        torch.tensor(float(len(y)), device=env.device, dtype=torch.float64),
                    ]
                )
            if env.is_main and cfg.print_freq and (it + 1) % cfg.print_freq == 0:
                rate = (it + 1) * cfg.global_batch_size / (time.time() - tic)
                print(
                    f"[{phase}] epoch {epoch} iter {it + 1}/{n_steps} loss {loss.item():.4f} "
                    f"({rate:.0f} img/s)",
                    flush=True,
                )
        all_reduce_sum(sums, env)
        n = max(float(sums[2]), 1.0)
        return {
            "train_loss": float(sums[0]) / n,
            "train_acc": 100 * float(sums[1]) / n,
            "train_time": time.time() - tic,
        }

    @torch.no_grad()
    def evaluate(self, loader: DataLoader) -> dict:
        env = self.env
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=env.device)
        for x, y in self._limit(loader):
            x, y = self._inputs(x, False), y.to(env.device, non_blocking=True)
            with torch.autocast(**self.amp):
                logits = self.model(x).float()
            sums += torch.stack(
                [
                    F.cross_entropy(logits, y, reduction="sum").double(),
                    (logits.argmax(1) == y).sum().double(),
                    torch.tensor(float(len(y)), device=env.device, dtype=torch.float64),
                ]
            )
        all_reduce_sum(sums, env)
        n = max(float(sums[2]), 1.0)
        return {"loss": float(sums[0]) / n, "acc": 100 * float(sums[1]) / n}

    # -- one phase ------------------------------------------------------------------------
    def _optimizer(self, phase: str) -> tuple[torch.optim.Optimizer, Any, nn.Module]:
        cfg, env = self.cfg, self.env
        head_params = list(self.model.head.parameters())
        ext_params = list(self.model.extractor.parameters())
        for p in ext_params:
            p.requires_grad_(phase == "B")
        if phase == "A":
            groups = [{"params": head_params, "lr": cfg.lr_head, "name": "head"}]
            module, t_max = self.model.head, cfg.lr_epochs
        else:
            groups = [
                {"params": ext_params, "lr": cfg.lr_extractor, "name": "extractor"},
                {"params": head_params, "lr": cfg.lr_head, "name": "head"},
            ]
            module, t_max = self.model, cfg.epochs
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(t_max, 1))
        if env.distributed:
            ids = [env.local_rank] if env.device.type == "cuda" else None
            module = DDP(module, device_ids=ids, broadcast_buffers=False)
        return opt, sched, module

    def run_phase(self, phase: str, resume_state: dict | None) -> bool:
        """Train one phase; returns False when stopped early by ``stop_after_epochs``."""
        cfg = self.cfg
        max_epochs = cfg.lr_epochs if phase == "A" else cfg.epochs
        patience = cfg.patience if phase == "A" else None
        opt, sched, forward = self._optimizer(phase)
        state = {"epoch": 0, "best_acc": -1.0, "best_epoch": -1, "bad_epochs": 0, "done": False}
        if resume_state is not None:
            self.model.load_state_dict(resume_state["model"])
            opt.load_state_dict(resume_state["optimizer"])
            sched.load_state_dict(resume_state["scheduler"])
            state = resume_state["early_stop"]
        key = f"phase_{phase.lower()}"
        while not state["done"] and state["epoch"] < max_epochs:
            if cfg.stop_after_epochs is not None and self.epochs_run >= cfg.stop_after_epochs:
                return False
            epoch = state["epoch"]
            lrs = [g["lr"] for g in opt.param_groups]
            row = {"epoch": epoch, **self.train_epoch(phase, epoch, forward, opt)}
            sched.step()
            ev = self.evaluate(self.val_loader)
            row.update(val_loss=ev["loss"], val_acc=ev["acc"], lr=lrs, time=time.time() - self.t0)
            if phase == "B":
                row["drift"], row["relative_drift"] = _drift(self.model, self.theta0)
            improved = ev["acc"] > state["best_acc"]
            if improved:
                state.update(best_acc=ev["acc"], best_epoch=epoch, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch + 1
            if patience is not None and state["bad_epochs"] >= patience:
                state["done"] = True
            if state["epoch"] >= max_epochs:
                state["done"] = True
            self.curves[key].append(row)
            if self.env.is_main:
                print(
                    f"[{phase}] epoch {epoch}: train loss {row['train_loss']:.4f} "
                    f"acc {row['train_acc']:.2f} | val loss {ev['loss']:.4f} acc {ev['acc']:.2f} "
                    f"(best {state['best_acc']:.2f} @ "
                    f"{state['best_epoch']})",
                    flush=True,
                )
            ckpt = {
                "phase": phase,
                "config": dataclasses.asdict(cfg),
                "model": self.model.state_dict(),
                "early_stop": dict(state),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "curves": self.curves,
                "results": self.results,
            }
            if improved:  # the best checkpoint needs only the weights
                self._save(phase, "best", {k: ckpt[k] for k in ("phase", "model", "early_stop")})
            self._save(phase, "last", ckpt)
            _barrier(self.env)
            self.epochs_run += 1
            self.write_results()
        self.results["phase_a_epochs" if phase == "A" else "phase_b_epochs"] = state["epoch"]
        if phase == "A":
            self.results.update(head_acc=state["best_acc"], head_epoch=state["best_epoch"])
        else:
            self.results.update(finetune_acc=state["best_acc"], finetune_epoch=state["best_epoch"])
        return True

    # -- the protocol ---------------------------------------------------------------------
    def _resume_point(self) -> tuple[str, dict | None]:
        """Which phase to start in, and the ``last`` checkpoint to continue from."""
        if not self.cfg.resume:
            return ("B" if self.cfg.joint else "A"), None
        for phase in ("B", "A"):
            p = self._path(phase, "last")
            if p.exists():
                ckpt = load_torch(p, map_location=self.env.device)
                _check_same_run(p, ckpt.get("config"), self.cfg)
                self.curves = ckpt["curves"]
                self.results.update(
                    {k: v for k, v in ckpt["results"].items() if k not in ("world_size",)}
                )
                if self.env.is_main:
                    print(
                        f"resuming phase {phase} after {ckpt['early_stop']['epoch']} epochs "
                        f"from {p}",
                        flush=True,
                    )
                return phase, ckpt
        if self.env.is_main:
            print(f"--resume: no checkpoint in {self.save_dir}; starting from scratch", flush=True)
        return ("B" if self.cfg.joint else "A"), None

    def run(self) -> dict:
        cfg = self.cfg
        phase, ckpt = self._resume_point()
        if phase == "A":
            if not self.run_phase("A", ckpt):
                return self._interrupted()
            ckpt = None
        if not cfg.joint:
            if ckpt is None:  # entering Phase B: start from the best Phase-A model
                self._load_model("A", "best")
                ev = self.evaluate(self.val_loader)
                self.results["baseline_acc"] = ev["acc"]
                self.results["baseline_loss"] = ev["loss"]
                if self.test_loader is not None:
                    self.results["head_test_acc"] = self.evaluate(self.test_loader)["acc"]
        if not self.run_phase("B", ckpt):
            return self._interrupted()
        self.results["drift_final"], self.results["relative_drift_final"] = _drift(
            self.model, self.theta0
        )
        self._load_model("B", "best")  # all ranks reload the best
        self.results["drift"], self.results["relative_drift"] = _drift(self.model, self.theta0)
        if self.test_loader is not None:
            self.results["finetune_test_acc"] = self.evaluate(self.test_loader)["acc"]
        if self.results["baseline_acc"] is not None:
            self.results["finetune_gain"] = (
                self.results["finetune_acc"] - self.results["baseline_acc"]
            )
        self.results["completed"] = True
        self.results["wall_time"] = time.time() - self.t0
        return self.write_results()

    def _interrupted(self) -> dict:
        if self.env.is_main:
            print(f"stopping after {self.epochs_run} epochs (--stop-after-epochs)", flush=True)
        return self.write_results()


RUN_NEUTRAL = frozenset(
    {"resume", "print_freq", "save_dir", "data_dir", "workers", "stop_after_epochs"}
)
"""Settings that may differ on ``--resume`` (they do not change what is computed)."""


def _check_same_run(path: Path, saved: dict | None, cfg: ScatteringTrainConfig) -> None:
    """``--resume`` continues the run in the checkpoint; changed settings are refused (they
    would be recorded in ``results.json`` without having run)."""
    if saved is None:
        raise OptionError(
            f"checkpoint {path} records no settings (written before ccnn 0.2); it cannot be "
            "resumed safely — start a fresh run in a new --save-dir"
        )
    now = dataclasses.asdict(cfg)
    changed = [
        f"--{k.replace('_', '-')} {now[k]} (checkpoint: {saved.get(k)})"
        for k in now
        if k not in RUN_NEUTRAL and saved.get(k) != now[k]
    ]
    if changed:
        raise OptionError(
            f"--resume continues the run in {path.parent} but these settings changed: "
            f"{', '.join(changed)}; resume with the checkpoint's settings, or start a new run "
            "with another --save-dir"
        )


def run(cfg: ScatteringTrainConfig) -> dict:
    """Run the two-phase protocol (inside or outside torchrun); returns the results document
    ``{"config", "results", "curves"}`` (also written to ``save_dir/results.json`` by rank 0)."""
    env = init_distributed()
    try:
        if env.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return _Trainer(cfg, env).run()
    finally:
        if env.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
