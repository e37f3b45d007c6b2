"""Tags for parameters that need their own optimiser settings.

Layers call :func:`tag_parameter` on e.g. Gaussian-mask widths (group ``"mask"``) or learnable
``omega_0`` frequencies (group ``"omega_0"``). The optimiser builder calls
:func:`parameter_groups` and gives each group its own learning-rate factor. Tags live on the
owning module (a plain dict), so they survive ``deepcopy``, ``.to()``, DDP and checkpointing —
no matching by parameter name.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

MASK = "mask"
OMEGA_0 = "omega_0"
KERNEL_NET = "kernel_net"


def tag_parameter(module: nn.Module, name: str, group: str) -> None:
    """Mark ``module.<name>`` (a direct parameter of ``module``) as belonging to ``group``."""
    if name not in module._parameters:
        raise KeyError(f"{type(module).__name__} has no direct parameter '{name}'")
    tags = module.__dict__.setdefault("_optim_tags", {})
    tags[name] = group


def tag_module(module: nn.Module, group: str) -> None:
    """Mark every direct parameter of ``module`` and its children as ``group`` (if untagged)."""
    for sub in module.modules():
        for name in sub._parameters:
            if sub._parameters[name] is not None:
                sub.__dict__.setdefault("_optim_tags", {}).setdefault(name, group)


def parameter_group(module: nn.Module, name: str) -> str | None:
    return module.__dict__.get("_optim_tags", {}).get(name)


def parameter_groups(
    model: nn.Module, groups: tuple[str, ...] = (MASK, OMEGA_0)
) -> dict[str, list[torch.Tensor]]:
    """Split trainable parameters into ``groups`` (first tag wins) and ``"default"``.

    Only the tags named in ``groups`` make their own group; other tags (e.g. ``kernel_net``)
    are informational and fall into ``"default"``.
    """
    out: dict[str, list[torch.Tensor]] = defaultdict(list)
    seen: set[int] = set()
    for module in model.modules():
        tags = module.__dict__.get("_optim_tags", {})
        for name, p in module._parameters.items():
            if p is None or not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            tag = tags.get(name)
            out[tag if tag in groups else "default"].append(p)
    return dict(out)


def tagged_parameters(model: nn.Module, group: str) -> list[torch.Tensor]:
    """All parameters of ``model`` carrying tag ``group``."""
    return [
        p
        for m in model.modules()
        for name, p in m._parameters.items()
        if p is not None and m.__dict__.get("_optim_tags", {}).get(name) == group
    ]
