"""Batch normalisation over the global batch: observed positions only, across processes.

One implementation serves every case where plain ``nn.BatchNorm*d`` statistics would be wrong:

* **padding masks** — series of unequal length (:mod:`ccnn.nn.masking`): statistics over the
  observed steps only;
* **several processes** (DDP, ``torchrun``) — statistics of the global batch, summed with a
  differentiable all-reduce, so it works with gloo on CPU as well as NCCL on GPU (torch's
  ``SyncBatchNorm`` is GPU-only).

Without a mask and outside a process group the result equals ``nn.BatchNorm*d`` exactly, and the
running statistics are updated the same way (momentum, unbiased variance).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ccnn.errors import OptionError

_BatchNorm = nn.modules.batchnorm._BatchNorm


def _world() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


def batch_norm(norm: _BatchNorm, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``norm``'s batch normalisation to ``x (b, c, *s)`` with statistics over the
    positions where ``mask (b, *s)`` is 1 (all positions when ``None``), summed over every
    process of the default process group when there is one.

    In eval mode (with running statistics) the running statistics are used, as usual.
    """
    use_batch = norm.training or not norm.track_running_stats
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()  # half precision: fp32
    shape = (1, -1) + (1,) * (x.dim() - 2)
    if use_batch:
        dims = [0, *range(2, x.dim())]
        if mask is None:
            count = torch.tensor(float(xf.numel() // xf.shape[1]), device=x.device)
            total = xf.sum(dims)
        else:
            m = mask[:, None].to(xf.dtype)
            count = m.sum()
            total = (xf * m).sum(dims)
        distributed = _world() > 1
        if distributed:
            count = _all_reduce(count.detach().clone())
            total = _all_reduce(total)
        if count < 2:
            raise OptionError("BatchNorm needs at least two observed positions in a batch")
        mean = total / count  # (c,)
        sq = (xf - mean.view(shape)).square()
        sq = sq.sum(dims) if mask is None else (sq * m).sum(dims)
        var = (_all_reduce(sq) if distributed else sq) / count  # biased, (c,)
        if norm.training and norm.track_running_stats:
            with torch.no_grad():
                norm.num_batches_tracked.add_(1)
                momentum = (
                    norm.momentum
                    if norm.momentum is not None
                    else 1.0 / float(norm.num_batches_tracked)
                )
                unbiased = var * count / (count - 1)
                norm.running_mean.lerp_(mean.detach().to(norm.running_mean.dtype), momentum)
                norm.running_var.lerp_(unbiased.detach().to(norm.running_var.dtype), momentum)
    else:
        mean, var = norm.running_mean, norm.running_var
    out = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + norm.eps)
    if norm.affine:
        out = out * norm.weight.view(shape) + norm.bias.view(shape)
    return out.to(x.dtype)


class GlobalBatchNorm(_BatchNorm):
    """``nn.BatchNorm{1,2,3}d`` whose training statistics are those of the global batch over
    all processes (see :func:`batch_norm`); same arguments and ``state_dict``.

    Shapes: ``(b, c, *s) -> (b, c, *s)`` for any number of spatial dimensions.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise OptionError(f"expected a (b, c, ...) input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if _world() == 1 or not self.training:
            return super().forward(x)
        return batch_norm(self, x)


def to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every ``nn.BatchNorm{1,2,3}d`` in ``module`` for a :class:`GlobalBatchNorm` sharing
    the values of its parameters and buffers (in place, before an optimiser is built; returns
    ``module``)."""
    for name, child in module.named_children():
        if type(child) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
            like = next(iter(child.state_dict().values()), None)
            floating = [t for t in child.state_dict().values() if t.is_floating_point()]
            new = GlobalBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
                device=like.device if like is not None else None,
                dtype=floating[0].dtype if floating else None,
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            to_global_batchnorm(child)
    return module
