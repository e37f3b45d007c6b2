"""Learnable scattering network: stacked scattering octaves → [GAP] → BatchNorm2d → Linear.

Each :class:`~ccnn.nn.scattering.ScatteringBlock` is one octave of a 2D scattering transform
(Bruna & Mallat, arXiv:1203.1513) with learnable, initially Kymatio-exact filters and learnable
channel mixing. With ``n`` blocks, ``L`` orientations and ``lowpass_last`` the extractor maps
``(b, 3, H, W)`` to ``(b, 3(1+L)^(n−1), H/2ⁿ, W/2ⁿ)``; e.g. 375 @ 14² for 4 blocks, L=4, 224².

Legend: ``b`` batch · ``c`` channels · ``h, w`` spatial · ``k`` classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ccnn.errors import OptionError
from ccnn.models.registry import MODELS
from ccnn.nn.scattering import MODULUS_TYPES, ScatteringBlock, mixing_groups

__all__ = ["ScatteringHead", "ScatteringNet", "ScatteringNetSpec", "describe_scattering_net"]


@dataclass
class ScatteringNetSpec:
    """Channel/parameter book-keeping of a :class:`ScatteringNet`, computed without tensors."""

    channels: list[int]  # input channels of each block, then the output channels
    groups: list[int]  # conv groups of each block
    spatial: tuple[int, int]  # spatial size of the extractor output
    head_features: int  # inputs of the Linear
    n_params_extractor: int
    n_params_batchnorm: int
    n_params_linear: int
    n_params_classifier: int = 0  # BatchNorm + Linear
    n_params_total: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def describe_scattering_net(
    num_classes: int,
    in_channels: int = 3,
    input_size: tuple[int, int] | int = 224,
    n_blocks: int = 4,
    L: int = 4,
    kernel_size: int = 7,
    modulus_type: str = "complex_modulus",
    lowpass_last: bool = True,
    mixing_horizon: int | None = None,
    global_avg_pool: bool = False,
    warn: bool = False,
) -> ScatteringNetSpec:
    """Analytic channel, group and parameter counts of ``ScatteringNet(**same arguments)``."""
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    channels, groups, n_ext = [in_channels], [], 0
    k2 = kernel_size**2
    for i in range(n_blocks):
        c = channels[-1]
        g = mixing_groups(c, mixing_horizon, warn=warn)
        lowpass_only = lowpass_last and i == n_blocks - 1
        n_conv = c if lowpass_only else c * (1 + 2 * L)
        n_ext += n_conv * (c // g) * k2 + 4  # convs + shared 2×2 pool
        if modulus_type == "phase_relu" and not lowpass_only:
            n_ext += 4 * c * L
        groups.append(g)
        channels.append(c if lowpass_only else c * (1 + L))
        h, w = h // 2, w // 2
    c = channels[-1]
    feats = c if global_avg_pool else c * h * w
    n_bn, n_lin = 2 * c, feats * num_classes + num_classes
    return ScatteringNetSpec(
        channels=channels,
        groups=groups,
        spatial=(h, w),
        head_features=feats,
        n_params_extractor=n_ext,
        n_params_batchnorm=n_bn,
        n_params_linear=n_lin,
        n_params_classifier=n_bn + n_lin,
        n_params_total=n_ext + n_bn + n_lin,
    )


class ScatteringHead(nn.Module):
    """[global average pool] → BatchNorm2d → flatten → Linear. ``(b, c, h, w) → (b, k)``."""

    def __init__(
        self, channels: int, spatial: tuple[int, int], num_classes: int, global_avg_pool: bool
    ):
        super().__init__()
        self.global_avg_pool = global_avg_pool
        self.norm = nn.BatchNorm2d(channels)
        feats = channels if global_avg_pool else channels * spatial[0] * spatial[1]
        self.fc = nn.Linear(feats, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_avg_pool:
            x = x.mean(dim=(2, 3), keepdim=True)  # (b, c, 1, 1)
        return self.fc(self.norm(x).flatten(1))  # (b, k)


@MODELS.register("scattering_net")
class ScatteringNet(nn.Module):
    """Stacked learnable scattering blocks and a linear head.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
        input_size: ``(H, W)`` (or ``S``) the Linear is sized for when not ``global_avg_pool``.
        n_blocks: scattering octaves.
        L: orientations per block.
        kernel_size: odd K of every block.
        modulus_type: ``"complex_modulus"`` or ``"phase_relu"``.
        lowpass_last: the last block outputs only its low-pass path.
        mixing_horizon: input channels each output channel mixes (``None``: all); see
            :func:`~ccnn.nn.scattering.mixing_groups`.
        global_avg_pool: average the extractor output over space before the head.
        init: ``"scattering"`` (Kymatio filters, per-channel) or ``"random"``.
        fuse: conv+pool fusion (``True``/``False``/``"auto"``).

    ``self.extractor`` holds the blocks (what Phase B fine-tunes), ``self.head`` the BatchNorm
    and Linear (trained in both phases).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        input_size: tuple[int, int] | int = 224,
        n_blocks: int = 4,
        L: int = 4,
        kernel_size: int = 7,
        modulus_type: str = "complex_modulus",
        lowpass_last: bool = True,
        mixing_horizon: int | None = None,
        global_avg_pool: bool = False,
        init: str = "scattering",
        fuse: bool | str = "auto",
    ):
        super().__init__()
        if modulus_type not in MODULUS_TYPES:
            raise OptionError(f"Unknown modulus_type {modulus_type!r}; use one of {MODULUS_TYPES}")
        if n_blocks < 1:
            raise OptionError(f"n_blocks must be >= 1, got {n_blocks}")
        self.spec = describe_scattering_net(
            num_classes,
            in_channels,
            input_size,
            n_blocks,
            L,
            kernel_size,
            modulus_type,
            lowpass_last,
            mixing_horizon,
            global_avg_pool,
            warn=True,
        )
        if min(self.spec.spatial) < 1:
            raise OptionError(
                f"input size {input_size} is too small for n_blocks={n_blocks} (each block "
                "halves it); use fewer blocks or larger inputs"
            )
        blocks = []
        for i, (c, g) in enumerate(zip(self.spec.channels[:-1], self.spec.groups)):
            blocks.append(
                ScatteringBlock(
                    c,
                    L,
                    kernel_size,
                    modulus_type=modulus_type,
                    groups=g,
                    lowpass_only=lowpass_last and i == n_blocks - 1,
                    init=init,
                    fuse=fuse,
                )
            )
        self.extractor = nn.Sequential(*blocks)
        self.head = ScatteringHead(
            self.spec.channels[-1], self.spec.spatial, num_classes, global_avg_pool
        )

    @property
    def out_channels(self) -> int:
        return self.spec.channels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, c, H, W) → (b, k)``."""
        return self.head(self.extractor(x))
