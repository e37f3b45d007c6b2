"""CIFAR ResNets of He et al. (2016, arXiv:1512.03385, §4.2): the discrete baselines of FlexConv.

Legend: b batch · c channels · h, w image sides.

Structure (depth = 6n + 2)::

    x -> Conv3x3(in -> 16) -> BN -> ReLU
      -> n BasicBlocks at 16 channels, n at 32 (first with stride 2), n at 64 (stride 2)
      -> global average pool -> Linear(64 -> num_classes)

BasicBlock: ``ReLU(BN(Conv3x3(ReLU(BN(Conv3x3(x))))) + shortcut(x))``. Shortcuts are
"option A" (parameter-free): where the shape changes, subsample by 2 (``x[..., ::2, ::2]``) and
zero-pad the new channels equally on both sides. This is what the paper uses on CIFAR and what
the FlexConv baselines used. ``shortcut="B"`` gives projection shortcuts instead (1x1 conv with
stride, no bias, + BatchNorm) at the two stage transitions. Convolutions have no bias;
convolution and linear weights are kaiming-normal initialised.

Parameter counts (10 classes, RGB input):

========  ===========  ===========
depth     option A     option B
========  ===========  ===========
20        269,722      272,474
32        464,154      466,906
44        658,586      661,338
56        853,018      855,770
110       1,727,962    1,730,714
1202      19,421,274   19,424,026
========  ===========  ===========

(Both round to the paper's 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M; option B adds
16·32 + 64 + 32·64 + 128 = 2,752 parameters.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ccnn.errors import OptionError
from ccnn.models.registry import MODELS

CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110, 1202)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: stride-``stride`` subsampling and zero-padded channels.

    Shapes: ``(b, c_in, h, w) -> (b, c_out, h / stride, w / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise OptionError(
                f"option-A shortcuts cannot reduce channels ({in_channels} -> {out_channels})"
            )
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_front, self.pad_back = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (b, c_in, h', w')
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))  # (b, c_out, h', w')


SHORTCUTS = ("A", "B")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and ReLU, and an option-A (or B) shortcut.

    Shapes: ``(b, c_in, h, w) -> (b, c_out, h / stride, w / stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class CIFARResNet(nn.Module):
    """He et al.'s CIFAR ResNet of ``depth = 6n + 2`` layers (20, 32, 44, 56, 110, 1202).

    Args:
        depth: total number of weighted layers, ``6n + 2``.
        num_classes: logits.
        in_channels: image channels.
        widths: the three stage widths (16, 32, 64 in the paper).
        shortcut: ``"A"`` (zero-padding, the paper's CIFAR choice) or ``"B"`` (projection).

    Any input side works (the pool is adaptive), e.g. 16x16 for cross-resolution runs.

    Shapes: ``(b, in_channels, h, w) -> (b, num_classes)``.
    """

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        shortcut: str = "A",
    ):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise OptionError(
                f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}"
            )
        if shortcut not in SHORTCUTS:
            raise OptionError(f"Unknown shortcut option {shortcut!r}; supported: {list(SHORTCUTS)}")
        n = (depth - 2) // 6
        self.depth, self.num_classes = depth, num_classes
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages: list[nn.Module] = []
        c_in = widths[0]
        for i, c_out in enumerate(widths):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(BasicBlock(c_in, c_out, stride, shortcut))
                c_in = c_out
        self.blocks = nn.Sequential(*stages)
        self.linear = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(b, c, h, w) -> (b, num_classes)``."""
        h = F.relu(self.bn1(self.conv1(x)))  # (b, 16, h, w)
        h = self.blocks(h)  # (b, 64, h / 4, w / 4)
        return self.linear(h.mean(dim=(2, 3)))  # (b, num_classes)


def _register(depth: int) -> None:
    def factory(
        num_classes: int | None = None,
        in_channels: int = 3,
        *,
        out_channels: int | None = None,
        data_dim: int = 2,
        **kwargs: Any,
    ) -> CIFARResNet:
        if data_dim != 2:
            raise OptionError(f"CIFARResNet{depth} is a 2D image model, got data_dim={data_dim}")
        if num_classes is not None and out_channels is not None and num_classes != out_channels:
            raise OptionError(f"num_classes={num_classes} and out_channels={out_channels} disagree")
        classes = (
            num_classes
            if num_classes is not None
            else (out_channels if out_channels is not None else 10)
        )
        return CIFARResNet(depth, num_classes=classes, in_channels=in_channels, **kwargs)

    factory.__name__ = f"cifar_resnet{depth}"
    factory.__doc__ = (
        f"He et al.'s CIFAR ResNet-{depth} (option-A shortcuts). Accepts ``num_classes`` or "
        "``out_channels`` (the uniform model-factory keyword) and ``in_channels``."
    )
    MODELS.add(f"CIFARResNet{depth}", factory)


for _depth in CIFAR_RESNET_DEPTHS:
    _register(_depth)
