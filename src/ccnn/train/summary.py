"""Per-layer summary of a network for a given input shape (FlexConv's ``summary=[B, C, H, W]``).

One forward pass with zeros of that shape, in eval mode and without gradients (BatchNorm
statistics are not touched), with forward hooks on every module down to ``depth`` levels::

    print(format_summary(layer_summary(net, (64, 3, 32, 32), depth=3)))

Columns: module name (dotted path), type, output shape, parameters (of that module including
its children). Continuous-kernel layers also report the kernel size they sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ccnn.errors import OptionError


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: str
    params: int
    depth: int


def _shape(out) -> str:
    if torch.is_tensor(out):
        return str(list(out.shape))
    if isinstance(out, tuple | list):
        return ", ".join(
            _shape(o) for o in out if torch.is_tensor(o) or isinstance(o, tuple | list)
        )
    return "-"


def layer_summary(
    network: nn.Module,
    input_shape: Sequence[int],
    depth: int = 5,
    device: torch.device | str | None = None,
) -> list[LayerRow]:
    """Rows for the modules of ``network`` down to ``depth`` levels, in execution order.

    Shapes: the forward input is ``zeros(input_shape)`` (e.g. ``(b, c, h, w)``).
    """
    if depth < 1:
        raise OptionError(f"summary depth must be >= 1, got {depth}")
    if device is None:
        ref = next(iter(network.parameters()), None)
        device = ref.device if ref is not None else "cpu"
    rows: list[LayerRow] = []
    handles = []

    def hook_for(name: str, module: nn.Module, level: int):
        def hook(_module, _inputs, output):
            kind = type(module).__name__
            kernel = getattr(module, "_cache_kernel", None)
            if kernel is not None:
                kind += f" (kernel {'x'.join(map(str, kernel.shape[2:]))})"
            n = sum(p.numel() for p in module.parameters())
            rows.append(LayerRow(name, kind, _shape(output), n, level))

        return hook

    for name, module in network.named_modules():
        level = 0 if not name else name.count(".") + 1
        if level > depth:
            continue
        handles.append(
            module.register_forward_hook(hook_for(name or type(network).__name__, module, level))
        )
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            network(torch.zeros(tuple(input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
        network.train(was_training)
    # the root finishes last; show it first
    rows.sort(key=lambda r: r.depth == 0, reverse=True)
    return rows


def format_summary(rows: list[LayerRow], total_params: int | None = None) -> str:
    """A plain-text table of :func:`layer_summary` rows, with total parameters."""
    header = ("Layer", "Type", "Output shape", "Params")
    body = [
        (("  " * max(r.depth - 1, 0)) + r.name, r.type, r.output_shape, f"{r.params:,}")
        for r in rows
    ]
    widths = [
        max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)
    ]
    line = "-" * (sum(widths) + 3 * (len(widths) - 1))

    def fmt(cols) -> str:
        return " | ".join(
            c.rjust(w) if i == 3 else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths))
        )

    out = [line, fmt(header), line, *(fmt(b) for b in body), line]
    if total_params is None and rows:
        total_params = max(r.params for r in rows)
    if total_params is not None:
        out.append(f"Total parameters: {total_params:,}")
    return "\n".join(out)


def print_summary(network: nn.Module, input_shape: Sequence[int], depth: int = 5) -> str:
    """Print (and return) the summary table of ``network`` for ``input_shape``."""
    total = sum(p.numel() for p in network.parameters() if p.requires_grad)
    text = format_summary(layer_summary(network, input_shape, depth), total)
    print(text)
    return text
