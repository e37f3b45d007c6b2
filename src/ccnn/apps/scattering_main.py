"""``train.py``: learnable wavelet-scattering networks, two-phase protocol, under torchrun.

Example (seed 002)::

    torchrun --nproc_per_node=8 train.py --dataset imagenet --global-batch-size 1024 \
        --data-dir /datasets/ImageNet --lr-epochs 20 --print-freq 200 \
        --n-blocks 4 --L 4 --lowpass-last --save-dir imagenet_runs/4b_L4_lp

See ``docs/scattering.md`` and :mod:`ccnn.train.scattering`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ccnn.apps.common import EXIT_USER_ERROR, report_errors
from ccnn.nn.scattering import MODULUS_TYPES
from ccnn.train.scattering import DATASET_CHOICES, ScatteringTrainConfig, run

__all__ = ["build_parser", "main", "parse_config"]


def _train_size(text: str) -> float:
    v = float(text)
    if v <= 0 or (v > 1 and v != int(v)):
        raise argparse.ArgumentTypeError("expected a fraction in (0, 1] or an integer count > 1")
    return v


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line (``error: ...``) and exit code 2, like the other apps."""

    def error(self, message: str):
        print(f"error: {message} (see train.py --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def build_parser() -> argparse.ArgumentParser:
    d = ScatteringTrainConfig()
    p = _Parser(
        prog="train.py",
        description="Learnable wavelet-scattering network: head-only training (Phase A), then "
        "fine-tuning of the whole network (Phase B).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASET_CHOICES, default=d.dataset)
    g.add_argument(
        "--data-dir",
        default=d.data_dir,
        help="imagenet: folder with train/ and val/ class folders; cifar: dataset root",
    )
    g.add_argument(
        "--train-size",
        type=_train_size,
        default=d.train_size,
        help="float <= 1: fraction of every class; int > 1: total count (stratified, seeded)",
    )
    g.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers per process")
    g.add_argument(
        "--image-size",
        type=int,
        default=d.image_size,
        help="crop side for imagenet / side of --fake-data images (default: native)",
    )
    g.add_argument(
        "--fake-data", action="store_true", help="random images with the dataset's shape"
    )
    g.add_argument("--fake-train-size", type=int, default=d.fake_train_size)
    g.add_argument("--fake-val-size", type=int, default=d.fake_val_size)

    g = p.add_argument_group("model")
    g.add_argument("--n-blocks", type=int, default=d.n_blocks)
    g.add_argument("--L", type=int, default=d.L, help="orientations per block")
    g.add_argument("--kernel-size", type=int, default=d.kernel_size, help="odd K")
    g.add_argument(
        "--lowpass-last", action="store_true", help="last block outputs only its low-pass"
    )
    g.add_argument(
        "--mixing-horizon",
        type=int,
        default=d.mixing_horizon,
        help="input channels each output channel mixes (groups = C//h, adjusted to divide C)",
    )
    g.add_argument("--modulus-type", choices=MODULUS_TYPES, default=d.modulus_type)
    g.add_argument("--global-avg-pool", action="store_true")
    g.add_argument(
        "--random-init", action="store_true", help="random filters instead of Morlet/Gaussian"
    )
    g.add_argument(
        "--fuse",
        choices=("auto", "on", "off"),
        default=d.fuse,
        help="fuse conv + 2x2 pool into one stride-2 (K+1)^2 conv",
    )

    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--global-batch-size",
        type=int,
        default=d.global_batch_size,
        help="summed over processes (must be divisible by WORLD_SIZE)",
    )
    g.add_argument(
        "--lr-epochs", type=int, default=d.lr_epochs, help="Phase A epochs (cosine length)"
    )
    g.add_argument("--epochs", type=int, default=d.epochs, help="Phase B epochs (cosine length)")
    g.add_argument("--lr-head", type=float, default=d.lr_head)
    g.add_argument("--lr-extractor", type=float, default=d.lr_extractor)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--patience", type=int, default=d.patience, help="Phase A early stopping")
    g.add_argument(
        "--joint", action="store_true", help="skip Phase A; train everything from the start"
    )
    g.add_argument(
        "--l2-penalty", type=float, default=d.l2_penalty, help="lambda * ||theta - theta0||^2"
    )
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    g.add_argument("--channels-last", action="store_true")

    g = p.add_argument_group("run")
    g.add_argument("--save-dir", default=d.save_dir)
    g.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in --save-dir"
    )
    g.add_argument("--print-freq", type=int, default=d.print_freq)
    g.add_argument(
        "--limit-batches",
        type=int,
        default=d.limit_batches,
        help="at most N train and N eval batches per epoch (smoke runs)",
    )
    g.add_argument(
        "--stop-after-epochs",
        type=int,
        default=d.stop_after_epochs,
        help="test hook: exit after N epochs as if interrupted",
    )
    return p


def parse_config(argv: Sequence[str] | None = None) -> ScatteringTrainConfig:
    args = build_parser().parse_args(argv)
    return ScatteringTrainConfig(**{k: v for k, v in vars(args).items()})


def main(argv: Sequence[str] | None = None) -> int:
    report_errors(lambda: run(parse_config(argv)))()
    return 0


if __name__ == "__main__":
    sys.exit(main())
