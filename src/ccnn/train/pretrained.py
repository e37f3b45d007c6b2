"""Loading pretrained weights into a network (``pretrained.load=True``)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ccnn.files import load_torch
from ccnn.train.runner import RunConfigError, check_state_fits

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
    network: nn.Module,
    filename: str,
    alias: str = "best",
    strict: bool = True,
    config: dict | None = None,
) -> Path:
    """Load the weights in ``filename`` into ``network`` (published checkpoints need no ccnn
    digest; ours are verified). A file that does not fit names the options that differ from
    ``config`` (the run's configuration), when the file records its own."""
    path = resolve_checkpoint(filename)
    checkpoint = load_torch(path, require_digest=False)
    state = network_state(checkpoint)
    if strict:
        check_state_fits(path, state, network.state_dict(), checkpoint.get("ccnn_config"), config)
    else:
        own = network.state_dict()
        state = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    network.load_state_dict(state, strict=strict)
    return path
