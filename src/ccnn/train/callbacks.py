"""Callbacks and I/O helpers: atomic checkpoints, kernel plots, results JSON."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ccnn.nn.conv import ContinuousConv


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` that never leaves a half-written file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if torch.is_tensor(o):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O writing through a temp file + rename (no torn checkpoints)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)


def plot_kernels(
    network: torch.nn.Module, path: str | os.PathLike, max_channels: int = 4
) -> Path | None:
    """Save a PNG with the sampled kernels (and masks) of every continuous conv in ``network``."""
    layers = [
        m for m in network.modules() if isinstance(m, ContinuousConv) and int(m.grid_size[0]) > 0
    ]
    if not layers:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max_channels + 1
    fig, axes = plt.subplots(
        len(layers), cols, figsize=(2.2 * cols, 1.8 * len(layers)), squeeze=False
    )
    with torch.no_grad():
        for row, layer in enumerate(layers):
            kernel = layer.sample_kernel().float().cpu()
            flat = kernel.reshape(-1, *kernel.shape[2:])
            for c in range(cols - 1):
                ax = axes[row, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c >= flat.shape[0]:
                    continue
                k = flat[c]
                if k.dim() == 1:
                    ax.plot(k.numpy(), lw=0.8)
                elif k.dim() == 2:
                    ax.imshow(k.numpy(), cmap="RdBu_r")
                else:
                    ax.imshow(k[k.shape[0] // 2].numpy(), cmap="RdBu_r")
                if row == 0:
                    ax.set_title(f"channel {c}", fontsize=7)
            ax = axes[row, -1]
            ax.set_xticks([])
            ax.set_yticks([])
            if layer.mask is not None:
                axes_grid, _ = layer.sampling_grid()
                pos = torch.stack(torch.meshgrid(*axes_grid, indexing="ij"), -1).reshape(
                    -1, layer.data_dim
                )
                m = layer.mask(pos).reshape(*[len(a) for a in axes_grid]).float().cpu()
                ax.plot(m.numpy()) if m.dim() == 1 else ax.imshow(m.reshape(m.shape[0], -1).numpy())
                ax.set_title("mask", fontsize=7)
            axes[row, 0].set_ylabel(f"layer {row}\n{tuple(kernel.shape[2:])}", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


class KernelPlotCallback(L.Callback):
    """Plot kernels at the end of training (and after every validation if ``every_epoch``)."""

    def __init__(self, out_dir: str | os.PathLike, every_epoch: bool = False):
        self.out_dir, self.every_epoch = Path(out_dir), every_epoch

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        fitting = trainer.state.fn == "fit"
        if self.every_epoch and fitting and trainer.is_global_zero and not trainer.sanity_checking:
            path = plot_kernels(
                pl_module.network, self.out_dir / f"kernels_epoch{trainer.current_epoch:03d}.png"
            )
            logger = trainer.logger
            if path is not None and logger is not None and hasattr(logger, "log_image"):
                logger.log_image(key="kernels", images=[str(path)])

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            plot_kernels(pl_module.network, self.out_dir / "kernels_final.png")
