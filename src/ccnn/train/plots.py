"""Figures of a trained network (PNG, matplotlib's Agg backend, imported only when drawing):
the sampled kernels and masks of every continuous convolution, and the per-layer frequency
report of :func:`ccnn.nn.aliasing.frequency_report` against the Nyquist frequency."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ccnn.nn.conv import ContinuousConv

__all__ = ["plot_frequency_report", "plot_kernels"]


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


def plot_frequency_report(report: list[dict[str, Any]], path: str | Path) -> Path:
    """Bar chart (PNG, Agg) of each layer's maximum frequency (MAGNet + mask, stacked) with its
    Nyquist frequency drawn as a line across the bar. Returns the written path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(report)
    fig = Figure(figsize=(max(4.0, 0.6 * n + 2.0), 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    xs = list(range(n))
    magnet = [r["f_magnet"] for r in report]
    mask = [r["f_mask"] for r in report]
    ax.bar(xs, magnet, color="tab:blue", label="MAGNet  Σ f_l")
    ax.bar(xs, mask, bottom=magnet, color="tab:orange", label="mask  f_mask")
    for x, r in zip(xs, report):
        ax.hlines(r["f_nyquist"], x - 0.45, x + 0.45, colors="tab:red", linewidth=2)
    ax.plot([], [], color="tab:red", linewidth=2, label="Nyquist (k-1)/4")
    ax.set_xticks(xs)
    ax.set_xticklabels([r["name"] or "<root>" for r in report], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("max frequency (cycles / unit)")
    ax.set_title("Kernel frequency vs Nyquist")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
