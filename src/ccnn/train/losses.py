"""Loss terms added to the training loss (``ClassificationModule(loss_terms=...)``): FlexConv's
weight decay over the sampled kernels and its mask-width penalty. Each takes the network after
its training forward and returns a scalar."""

from __future__ import annotations

import torch
from torch import nn

from ccnn.nn.conv import DiscreteConv
from ccnn.nn.masks import GaussianMask

__all__ = ["kernel_l2_norm", "mask_l2_norm"]


def kernel_l2_norm(network: nn.Module) -> torch.Tensor:
    """FlexConv's weight decay: ``sum ||K||_2`` (unsquared) over the spatial convolution kernels
    of the last training forward — sampled continuous kernels, SRF kernels, discrete conv
    weights wider than 1. Pointwise (1×1) convolutions — shortcuts, channel mixers — are not
    kernels in this sense and are left out."""
    total: torch.Tensor | None = None
    for module in network.modules():
        kernel = getattr(module, "last_kernel", None)
        if kernel is None and isinstance(module, DiscreteConv | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            kernel = module.weight if module.weight[0, 0].numel() > 1 else None
        if torch.is_tensor(kernel):
            total = kernel.norm() if total is None else total + kernel.norm()
    return total if total is not None else torch.zeros(())


def mask_l2_norm(network: nn.Module) -> torch.Tensor:
    """``sum ||sigma||_2`` over the Gaussian masks (``train.mask_l2_norm``: favours small masks)."""
    norms = [m.sigma.norm() for m in network.modules() if isinstance(m, GaussianMask)]
    return torch.stack(norms).sum() if norms else torch.zeros(())
