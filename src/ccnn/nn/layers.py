"""Small building blocks chosen by name: activations, norms, dropout, pointwise linear.

Names are torch.nn class names (``GELU``, ``ReLU``, ``Dropout2d``, ...) so config values such
as ``net.nonlinearity=GELU`` and ``net.dropout_type=Dropout2d`` work unchanged; unknown names
raise a ``KeyError`` that lists close matches.
"""

from __future__ import annotations

import difflib

import torch
from einops import rearrange
from torch import nn

from ccnn.registry import Registry, RegistryError


def _torch_nn_class(name: str, kind: str, base: type) -> type:
    cls = getattr(nn, name, None)
    if isinstance(cls, type) and issubclass(cls, base):
        return cls
    known = sorted(
        n for n in dir(nn) if isinstance(getattr(nn, n), type) and issubclass(getattr(nn, n), base)
    )
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise RegistryError(
        f"Unknown {kind} '{name}'.{hint} Use a torch.nn class name, e.g. {known[:8]}."
    )


_ACTIVATION_BASES = tuple(
    getattr(nn.modules.activation, n)
    for n in nn.modules.activation.__all__
    if isinstance(getattr(nn.modules.activation, n), type)
)


def get_activation(name: str | None) -> nn.Module:
    """``GELU``/``ReLU``/``SiLU``/``Identity``/... → a new module (None or '' → Identity)."""
    if not name or name == "Identity":
        return nn.Identity()
    cls = getattr(nn, name, None)
    if isinstance(cls, type) and issubclass(cls, _ACTIVATION_BASES):
        return cls()
    return _torch_nn_class(name, "nonlinearity", nn.Module)()


def get_dropout(name: str | None, p: float) -> nn.Module:
    """``Dropout``/``Dropout1d``/``Dropout2d``/``AlphaDropout``...; p == 0 → Identity.

    ``Dropout2d`` on a 3-D tensor ``(b, c, l)`` is applied as channel dropout (``Dropout1d``),
    which is what the CCNN models intend for sequences (torch would otherwise treat the input
    as an unbatched ``(c, h, w)`` image).
    """
    if p <= 0:
        return nn.Identity()
    cls = _torch_nn_class(name or "Dropout", "dropout type", nn.modules.dropout._DropoutNd)
    return ChannelDropout(cls, p) if cls in (nn.Dropout2d, nn.Dropout3d, nn.Dropout1d) else cls(p)


class ChannelDropout(nn.Module):
    """Drop whole channels of ``(b, c, *spatial)`` for any number of spatial dims."""

    def __init__(self, cls: type, p: float):
        super().__init__()
        self.p, self.kind = p, cls.__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty(x.shape[:2] + (1,) * (x.dim() - 2), device=x.device, dtype=x.dtype)
        keep.bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, type={self.kind}"


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dim of ``(b, c, *spatial)``.

    Shapes: ``(b, c, *s) -> (b, c, *s)``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


NORMS: Registry = Registry("norm")


@NORMS.register("BatchNorm")
def _batch_norm(num_channels: int, data_dim: int) -> nn.Module:
    return {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[data_dim](num_channels)


@NORMS.register("LayerNorm")
def _layer_norm(num_channels: int, data_dim: int) -> nn.Module:
    return ChannelLayerNorm(num_channels)


@NORMS.register("GroupNorm")
def _group_norm(num_channels: int, data_dim: int) -> nn.Module:
    return nn.GroupNorm(1, num_channels)


@NORMS.register("Identity", "")
def _identity_norm(num_channels: int, data_dim: int) -> nn.Module:
    return nn.Identity()


def get_norm(name: str | None, num_channels: int, data_dim: int) -> nn.Module:
    """Norm over channels of ``(b, c, *spatial)``: BatchNorm{d}d, channel LayerNorm, ..."""
    return NORMS.build(name or "Identity", num_channels, data_dim)


def pointwise(in_channels: int, out_channels: int, data_dim: int, bias: bool = True) -> nn.Module:
    """1x1 convolution for ``(b, c, *spatial)`` inputs of any ``data_dim``."""
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[data_dim](
        in_channels, out_channels, kernel_size=1, bias=bias
    )


def flatten_spatial(x: torch.Tensor) -> torch.Tensor:
    """``(b, c, *s) -> (b, c, prod(s))``."""
    return rearrange(x, "b c ... -> b c (...)")
