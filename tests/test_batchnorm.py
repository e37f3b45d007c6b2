"""GlobalBatchNorm / batch_norm: equal to nn.BatchNorm*d in one process, and in two processes
(gloo on CPU) equal to one process seeing the whole global batch — outputs, gradients and
running statistics; with padding masks, statistics over observed positions only."""

from __future__ import annotations

import copy
import os
import pickle
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ccnn.nn.batchnorm import GlobalBatchNorm, batch_norm, to_global_batchnorm

BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
SHAPES = {1: (6, 3, 10), 2: (6, 3, 5, 4), 3: (6, 3, 3, 4, 2)}


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_equals_torch_batchnorm_in_one_process(d, momentum):
    torch.manual_seed(d)
    ref = BN[d](3, momentum=momentum).double()
    ref.weight.data.uniform_(0.5, 1.5)
    ref.bias.data.uniform_(-1, 1)
    ours = to_global_batchnorm(nn.Sequential(copy.deepcopy(ref)))[0]
    assert isinstance(ours, GlobalBatchNorm)
    for step in range(3):
        x = torch.randn(SHAPES[d], dtype=torch.float64) * (step + 1) + step
        assert torch.allclose(ours(x), ref(x), atol=1e-12)
        assert torch.equal(ours.num_batches_tracked, ref.num_batches_tracked)
    # the shared function on the plain module (the masked path) too
    x = torch.randn(SHAPES[d], dtype=torch.float64)
    a, b = copy.deepcopy(ref), copy.deepcopy(ref)
    assert torch.allclose(batch_norm(a, x), b(x), atol=1e-12)
    assert torch.allclose(a.running_var, b.running_var, atol=1e-12)
    ours.eval(), ref.eval()
    assert torch.allclose(ours(x), ref(x), atol=1e-12)
    pickle.loads(pickle.dumps(ours))


def test_mask_uses_observed_positions_only():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 9, dtype=torch.float64)
    mask = torch.ones(4, 9, dtype=torch.float64)
    mask[1, 5:] = 0
    mask[3, 2:] = 0
    bn = nn.BatchNorm1d(3).double()
    out = batch_norm(bn, x, mask)
    observed = x.permute(0, 2, 1)[mask > 0]  # (n, c)
    mean, var = observed.mean(0), observed.var(0, unbiased=False)
    want = (x - mean[:, None]) / torch.sqrt(var[:, None] + bn.eps)
    keep = mask[:, None].expand_as(x) > 0
    assert torch.allclose(out[keep], want[keep], atol=1e-12)
    assert torch.allclose(bn.running_mean, 0.1 * mean, atol=1e-12)
    assert torch.allclose(bn.running_var, 0.9 + 0.1 * observed.var(0, unbiased=True), atol=1e-12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, x, mask, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        bn = GlobalBatchNorm(3).double()
        share = slice(rank * x.shape[0] // world, (rank + 1) * x.shape[0] // world)
        xs = x[share].clone().requires_grad_(True)
        if mask is None:
            y = bn(xs)
        else:
            y = batch_norm(bn, xs, mask[share])
        # a loss whose gradient depends on the statistics; summed over ranks = global loss
        (y * torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape)).sum().backward()
        torch.save(
            {
                "y": y.detach(),
                "grad": xs.grad,
                "w": bn.weight.grad,
                "rm": bn.running_mean,
                "rv": bn.running_var,
            },
            os.path.join(out_dir, f"{rank}.pt"),
        )
        dist.barrier()  # no rank closes its connections while another still reads from them
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's teardown: a gloo thread left joinable at exit aborts the
    # process now and then ("terminate called without an active exception", no Python frame),
    # after the results above are written. Errors raised above still reach mp.spawn.
    os._exit(0)


@pytest.mark.parametrize("masked", [False, True])
def test_two_processes_equal_one_global_batch(tmp_path, masked):
    torch.manual_seed(1)
    x = torch.randn(8, 3, 7, dtype=torch.float64) * 2 + 1
    mask = None
    if masked:
        mask = torch.ones(8, 7, dtype=torch.float64)
        mask[0, 4:] = 0
        mask[6, 1:] = 0
    mp.spawn(_worker, args=(2, _free_port(), x, mask, str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in range(2)]
    # reference: one process, the whole batch, same loss
    bn = nn.BatchNorm1d(3).double()
    xr = x.clone().requires_grad_(True)
    y = bn(xr) if mask is None else batch_norm(bn, xr, mask)
    weights = torch.cat(
        [torch.arange(p["y"].numel(), dtype=y.dtype).reshape(p["y"].shape) for p in parts]
    )
    (y * weights).sum().backward()
    assert torch.allclose(torch.cat([p["y"] for p in parts]), y.detach(), atol=1e-12)
    assert torch.allclose(torch.cat([p["grad"] for p in parts]), xr.grad, atol=1e-10)
    assert torch.allclose(parts[0]["w"] + parts[1]["w"], bn.weight.grad, atol=1e-10)
    for p in parts:
        assert torch.allclose(p["rm"], bn.running_mean, atol=1e-12)
        assert torch.allclose(p["rv"], bn.running_var, atol=1e-12)
