"""Loading pretrained weights into a network (``pretrained.load=True``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ccnn.train.runner import RunConfigError

ARTIFACTS_DIR = Path("artifacts")


def resolve_checkpoint(filename: str) -> Path:
    """``filename`` as given, else ``artifacts/<filename>`` (the published location)."""
    if not filename:
        raise RunConfigError("pretrained.load=True needs pretrained.filename=<checkpoint file>")
    for candidate in (Path(filename), ARTIFACTS_DIR / filename):
        if candidate.is_file():
            return candidate
    raise RunConfigError(
        f"Pretrained checkpoint '{filename}' not found: looked for '{Path(filename)}' and "
        f"'{ARTIFACTS_DIR / filename}'. Put the file in ./artifacts/ or pass its path."
    )


def network_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Network weights from a Lightning checkpoint (``network.*`` keys) or a plain state dict."""
    state = checkpoint.get("state_dict", checkpoint)
    if any(k.startswith("network.") for k in state):
        state = {k[len("network.") :]: v for k, v in state.items() if k.startswith("network.")}
    return state


def load_pretrained(
    network: nn.Module, filename: str, alias: str = "best", strict: bool = True
) -> Path:
    path = resolve_checkpoint(filename)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    try:
        missing, unexpected = network.load_state_dict(network_state(checkpoint), strict=False)
    except RuntimeError as err:  # shape mismatches
        detail = str(err).split("\n\t", 1)[-1].split("\n")[0]
        raise RunConfigError(
            f"Checkpoint {path} does not fit this network ({detail}). Build the network with the "
            "options (and dataset) it was trained with."
        ) from None
    if strict and (missing or unexpected):
        raise RunConfigError(
            f"Checkpoint {path} does not match this network: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]}. Build the network with the options it was "
            "trained with."
        )
    return path
