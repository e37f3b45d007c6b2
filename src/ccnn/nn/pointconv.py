"""Continuous-kernel convolutions on point clouds (CCNN, Knigge, Romero et al., arXiv:2206.03398).

Legend: b batch · c channels · n points · k neighbours · d position dims (3) · h kernel hidden.

A point cloud is a batched dense tensor ``x`` of shape ``(b, c, n)`` with positions
``(b, d, n)``. Each point ``i`` aggregates its ``K`` nearest neighbours ``j_1 .. j_K`` (ordered by
distance, the point itself first)::

    y_i = mixer( sum_k  x_{j_k} * kernel(p_i - p_{j_k}) * mask(p_i - p_{j_k})  + bias )

* ``kernel`` is a kernel network (``ccnn.nn.KERNELS``, MAGNet in the paper) evaluated on the
  relative positions ``p_i - p_j`` of every edge; its output has ``c_in`` channels (separable,
  depthwise) or ``c_in * c_out`` (dense, then no mixer).
* ``mask`` is an isotropic Gaussian with ONE learned width sigma (tagged ``MASK``) and mean 0::

      mask(r) = exp(-1/2 |r|^2 / (sigma^2 + 1e-8))
              = prod_{d in x,y,z} exp(-1/2 r_d^2 / (sigma^2 + 1e-8))

  i.e. the product of x/y/z Gaussians sharing sigma. Nothing is cropped: the neighbourhood is
  fixed by ``K``; ``threshold``/``dynamic_cropping`` options are accepted and ignored.
* Chang et al. initialisation: at the first forward, the kernel network's output layer is scaled
  by ``sqrt(1/fan)`` with fan = K (separable) or ``c_in * K`` (dense); a persistent buffer
  ``chang_initialized`` records it, so a loaded checkpoint is never rescaled again.
* Bottleneck (``bottleneck_factor = f > 0``, applied only when ``c_in > 32``, the published
  rule): a pointwise linear ``c_in -> c_in // f`` runs BEFORE the neighbourhood aggregation; the
  kernel network then outputs ``c_in // f`` channels, the depthwise bias has ``c_in // f``
  entries and the mixer maps ``c_in // f -> c_out``. This divides the memory of the gathered
  neighbour features ``(b, n, K, c)`` and of the kernel values by ``f``.

Registered in :data:`POINT_CONVS`:

* ``SeparablePointFlexConv`` — depthwise kernel on 3D offsets + mask + 1x1 mixer (the paper's).
* ``SeparablePointFlexConvDist`` — OUR definition (the class named by the paper's Table 1
  CCNN-6,380 command never existed in the published code): the kernel network reads the scalar
  distance ``|p_i - p_j|`` (``data_dim=1``) and the mask is on the distance. The layer is
  therefore invariant to rotations and reflections of the cloud (and to translations, like all
  point convs here).
* ``PointFlexConv`` — dense kernel ``(c_out, c_in)`` per edge, no mixer.

Neighbourhoods (:class:`Neighbourhood`, :func:`build_neighbourhood`) are computed once per cloud
per network forward and passed to every layer; a layer with a smaller K uses the first K
neighbours (they are sorted by distance). Positions carry no gradient (they are data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from einops import rearrange
from torch import nn

from ccnn.errors import OptionError
from ccnn.nn.kernels import build_kernel_net
from ccnn.nn.params import KERNEL_NET, MASK, tag_module, tag_parameter
from ccnn.registry import Registry

POINT_CONVS: Registry = Registry("point conv type")

KNN_CHUNK = 256
"""kNN query points per distance-matrix chunk: measured equal to one (b, n, n) matrix at n=512
and 1.4-2.7x faster for n >= 1024 (``benchmarks/bench_pointcloud.py``)."""

BOTTLENECK_MIN_CHANNELS = 32
"""The bottleneck applies only to layers with more input channels than this (published rule)."""


# ------------------------------------------------------------------------------------------
# neighbourhoods


def knn(positions: torch.Tensor, k: int, *, chunk_size: int | None = None) -> torch.Tensor:
    """Indices of the ``k`` nearest neighbours of every point, nearest first, self first.

    Squared Euclidean distances ``|p_i|^2 + |p_j|^2 - 2 p_i.p_j`` (one batched matmul) followed by
    ``topk``; the diagonal is set to -1 so that each point is its own first neighbour even when
    the cloud holds duplicate points. ``chunk_size`` evaluates the distance matrix for that many
    query points at a time (memory ``b * chunk * n`` instead of ``b * n * n``); default
    :data:`KNN_CHUNK`.

    Shapes: ``(b, n, d) -> (b, n, k)`` (int64).
    """
    b, n, _ = positions.shape
    if not 1 <= k <= n:
        raise OptionError(f"knn needs 1 <= k <= n, got k={k} for clouds of {n} points")
    chunk_size = chunk_size or KNN_CHUNK
    with torch.no_grad():
        pos = positions.detach()
        sq = pos.pow(2).sum(-1)  # (b, n)
        out = []
        for start in range(0, n, chunk_size):
            q = pos[:, start : start + chunk_size]  # (b, m, d)
            dist = (
                sq[:, start : start + chunk_size, None]
                + sq[:, None, :]
                - 2 * q @ pos.transpose(1, 2)
            )  # (b, m, n)
            rows = torch.arange(q.shape[1], device=pos.device)
            dist[:, rows, rows + start] = -1.0  # self first
            out.append(dist.topk(k, dim=-1, largest=False, sorted=True).indices)  # (b, m, k)
        return torch.cat(out, dim=1)


def knn_reference(positions: torch.Tensor, k: int) -> torch.Tensor:
    """Plain reference of :func:`knn`: ``torch.cdist`` + a full sort (for tests/benchmarks).

    Shapes: ``(b, n, d) -> (b, n, k)``.
    """
    dist = torch.cdist(positions, positions)  # (b, n, n)
    n = dist.shape[-1]
    dist = dist + torch.diag(torch.full((n,), -1.0, dtype=dist.dtype, device=dist.device))
    return dist.argsort(dim=-1, stable=True)[..., :k]


@dataclass
class Neighbourhood:
    """The K nearest neighbours of every point and their offsets, shared by all layers.

    Attributes:
        index: ``(b, n, k)`` neighbour indices, nearest first (the point itself at 0).
        offsets: ``(b, n, k, d)`` relative positions ``p_i - p_j`` (no gradient).
    """

    index: torch.Tensor
    offsets: torch.Tensor
    _cache: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_neighbours(self) -> int:
        return self.index.shape[-1]

    def first(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Index and offsets of the first ``k`` neighbours.

        Shapes: ``-> (b, n, k)``, ``(b, n, k, d)``.
        """
        if k > self.num_neighbours:
            raise OptionError(
                f"this neighbourhood holds {self.num_neighbours} neighbours, {k} requested"
            )
        return self.index[..., :k], self.offsets[..., :k, :]

    def sq_distances(self, k: int) -> torch.Tensor:
        """``|p_i - p_j|^2`` of the first ``k`` neighbours (cached). Shapes: ``-> (b, n, k)``."""
        key = ("sq", k)
        if key not in self._cache:
            self._cache[key] = self.first(k)[1].pow(2).sum(-1)
        return self._cache[key]

    def distances(self, k: int) -> torch.Tensor:
        """``|p_i - p_j|`` of the first ``k`` neighbours (cached). Shapes: ``-> (b, n, k)``."""
        key = ("dist", k)
        if key not in self._cache:
            self._cache[key] = self.sq_distances(k).sqrt()
        return self._cache[key]


def build_neighbourhood(
    positions: torch.Tensor, k: int, *, chunk_size: int | None = None
) -> Neighbourhood:
    """kNN graph of a batch of clouds; ``k`` is clamped to the number of points.

    Shapes: positions ``(b, d, n)`` -> index ``(b, n, k)``, offsets ``(b, n, k, d)``.
    """
    if positions.dim() != 3:
        raise OptionError(f"positions must be (b, d, n), got {tuple(positions.shape)}")
    pos = rearrange(positions.detach(), "b d n -> b n d")
    k = min(k, pos.shape[1])
    index = knn(pos, k, chunk_size=chunk_size)  # (b, n, k)
    neighbours = gather_points(pos, index)  # (b, n, k, d)
    return Neighbourhood(index=index, offsets=pos[:, :, None, :] - neighbours)


def gather_points(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Features of the neighbours. Shapes: ``(b, n, c)``, ``(b, n, k) -> (b, n, k, c)``."""
    b, n, k = index.shape
    flat = index.reshape(b, n * k, 1).expand(-1, -1, features.shape[-1])  # (b, n k, c)
    return torch.gather(features, 1, flat).reshape(b, n, k, -1)


# ------------------------------------------------------------------------------------------
# mask


class IsotropicGaussianMask(nn.Module):
    """Gaussian of the edge length with one learned width (mean 0, nothing cropped).

    ``mask(r) = exp(-1/2 |r|^2 / (sigma^2 + 1e-8))`` — equal to the product of x/y/z Gaussians
    with a shared sigma, and to a 1D Gaussian of the distance. ``sigma`` is tagged ``MASK``.

    Shapes: squared distances ``(...) -> (...)``.
    """

    def __init__(self, init_value: float = 0.075):
        super().__init__()
        if init_value <= 0:
            raise OptionError(f"mask init_value must be > 0 (mask.init_value), got {init_value}")
        self.init_value = init_value
        self.sigma = nn.Parameter(torch.tensor([float(init_value)]))
        tag_parameter(self, "sigma", MASK)

    def forward(self, sq_distance: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * sq_distance / (self.sigma.pow(2) + 1e-8))

    def extra_repr(self) -> str:
        return f"init_value={self.init_value}"


_IGNORED_MASK_OPTIONS = {"threshold", "dynamic_cropping", "temperature"}


def _build_mask(mask_type: str | None, mask_kwargs: dict[str, Any]) -> IsotropicGaussianMask | None:
    if not mask_type:
        return None
    if mask_type not in ("gaussian", "Gaussian"):
        raise OptionError(f"Unknown point-conv mask type '{mask_type}'; supported: ['gaussian']")
    kwargs = {k: v for k, v in mask_kwargs.items() if k not in _IGNORED_MASK_OPTIONS}
    if kwargs.pop("learn_mean", False):
        raise OptionError(
            "point-cloud masks are centred at the point itself (mu=0); set mask.learn_mean=False"
        )
    unknown = set(kwargs) - {"init_value"}
    if unknown:
        raise OptionError(
            f"Unknown point-conv mask option(s) {sorted(unknown)}; supported: ['init_value']"
        )
    return IsotropicGaussianMask(**kwargs)


# ------------------------------------------------------------------------------------------
# convolutions


class PointConv(nn.Module):
    """kNN convolution with a continuous kernel (see the module docstring for the maths).

    Args:
        in_channels, out_channels: feature channels of ``(b, c, n)`` input/output.
        data_dim: position dims (3 for ModelNet).
        num_neighbours: K (``kernel.num_edges``); clamped to the number of points.
        kernel_type: a name in ``ccnn.nn.KERNELS`` (``MAGNet``) or a KernelNet class.
        kernel_kwargs: kernel-network options (``hidden_channels``, ``num_layers``, ``omega_0``...).
        mask_type: ``"gaussian"`` (FlexConv) or ``None`` (no mask).
        mask_kwargs: ``init_value``; cropping options are accepted and ignored.
        separable: depthwise kernel + depthwise bias + 1x1 mixer (True) or dense kernel (False).
        distance: the kernel network reads ``|p_i - p_j|`` (rotation invariant) instead of
            ``p_i - p_j``.
        bias: the depthwise (separable) or output (dense) bias, and the mixer/bottleneck biases.
        chang_initialize: scale the kernel output layer by ``sqrt(1/fan)`` at the first forward.
        bottleneck_factor: ``f > 0`` reduces ``c_in > 32`` to ``c_in // f`` before aggregating.

    Shapes: ``x (b, c_in, n)``, ``neighbourhood`` (or positions ``(b, d, n)``) ``-> (b, c_out, n)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        data_dim: int = 3,
        *,
        num_neighbours: int = 16,
        kernel_type: str | type = "MAGNet",
        kernel_kwargs: dict[str, Any] | None = None,
        mask_type: str | None = "gaussian",
        mask_kwargs: dict[str, Any] | None = None,
        separable: bool = True,
        distance: bool = False,
        bias: bool = True,
        chang_initialize: bool = True,
        bottleneck_factor: int = -1,
    ):
        super().__init__()
        if num_neighbours < 1:
            raise OptionError(
                f"num_neighbours must be >= 1 (kernel.num_edges), got {num_neighbours}"
            )
        self.in_channels, self.out_channels, self.data_dim = in_channels, out_channels, data_dim
        self.num_neighbours, self.separable, self.distance = num_neighbours, separable, distance
        self.chang_initialize = chang_initialize
        use_bottleneck = bottleneck_factor is not None and bottleneck_factor > 0
        use_bottleneck = use_bottleneck and in_channels > BOTTLENECK_MIN_CHANNELS
        self.bottleneck_factor = bottleneck_factor if use_bottleneck else -1
        c = in_channels // bottleneck_factor if use_bottleneck else in_channels
        self.agg_channels = c
        self.bottleneck = nn.Linear(in_channels, c, bias=bias) if use_bottleneck else None
        if self.bottleneck is not None:
            nn.init.kaiming_uniform_(self.bottleneck.weight, nonlinearity="linear")
            if self.bottleneck.bias is not None:
                nn.init.zeros_(self.bottleneck.bias)

        self.mask = _build_mask(mask_type, dict(mask_kwargs or {}))
        kernel_kwargs = dict(kernel_kwargs or {})
        kernel_kwargs.setdefault("causal", False)
        self.kernel_net = build_kernel_net(
            kernel_type,
            data_dim=1 if distance else data_dim,
            out_channels=c if separable else c * out_channels,
            **kernel_kwargs,
        )
        tag_module(self.kernel_net, KERNEL_NET)
        if separable:
            self.bias = nn.Parameter(torch.zeros(c)) if bias else None
            self.channel_mixer = nn.Linear(c, out_channels, bias=bias)
            nn.init.kaiming_normal_(self.channel_mixer.weight)
            if self.channel_mixer.bias is not None:
                nn.init.zeros_(self.channel_mixer.bias)
        else:
            self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
            self.channel_mixer = None
        self.register_buffer("chang_initialized", torch.tensor(False))

    # -- kernel ----------------------------------------------------------------------------
    @torch.no_grad()
    def _apply_chang_init(self, k: int) -> None:
        fan = k if self.separable else self.agg_channels * k
        self.kernel_net.output_linear.weight.mul_(math.sqrt(1.0 / fan))
        self.chang_initialized.fill_(True)

    def edge_kernel(self, neighbourhood: Neighbourhood, k: int) -> torch.Tensor:
        """Masked kernel values on every edge.

        Shapes: ``-> (b, n, k, c)`` separable or ``(b, n, k, c_out, c)`` dense.
        """
        if self.chang_initialize and not bool(self.chang_initialized):
            self._apply_chang_init(k)
        _, offsets = neighbourhood.first(k)
        b, n = offsets.shape[:2]
        ref = self.kernel_net.output_linear.weight
        if self.distance:
            inputs = neighbourhood.distances(k).unsqueeze(-1)  # (b, n, k, 1)
        else:
            inputs = offsets
        values = self.kernel_net(inputs.reshape(-1, inputs.shape[-1]).to(ref.dtype))  # (b n k, o)
        if self.mask is not None:
            mask = self.mask(neighbourhood.sq_distances(k).to(ref.dtype))  # (b, n, k)
            values = values * mask.reshape(-1, 1)
        values = values.reshape(b, n, k, -1)  # (b, n, k, o)
        if not self.separable:
            values = values.reshape(b, n, k, self.out_channels, self.agg_channels)
        return values

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, neighbourhood: Neighbourhood | torch.Tensor) -> torch.Tensor:
        """Shapes: ``x (b, c_in, n)``, neighbourhood of ``(b, n, >=k)`` ``-> (b, c_out, n)``."""
        if x.dim() != 3 or x.shape[1] != self.in_channels:
            raise OptionError(
                f"{type(self).__name__} expects (b, {self.in_channels}, n) features, "
                f"got {tuple(x.shape)}"
            )
        if isinstance(neighbourhood, torch.Tensor):
            neighbourhood = build_neighbourhood(neighbourhood, self.num_neighbours)
        k = min(self.num_neighbours, x.shape[-1], neighbourhood.num_neighbours)
        index, _ = neighbourhood.first(k)
        h = rearrange(x, "b c n -> b n c")
        if self.bottleneck is not None:
            h = self.bottleneck(h)  # (b, n, c')
        kernel = self.edge_kernel(neighbourhood, k).to(h.dtype)
        neighbours = gather_points(h, index)  # (b, n, k, c)
        if self.separable:
            out = (neighbours * kernel).sum(2)  # (b, n, c)
            if self.bias is not None:
                out = out + self.bias
            out = self.channel_mixer(out)  # (b, n, c_out)
        else:
            out = torch.einsum("bnkc,bnkoc->bno", neighbours, kernel)  # (b, n, c_out)
            if self.bias is not None:
                out = out + self.bias
        return rearrange(out, "b n c -> b c n")

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, num_neighbours={self.num_neighbours}, "
            f"separable={self.separable}, distance={self.distance}, "
            f"bottleneck_factor={self.bottleneck_factor}"
        )


@POINT_CONVS.register("SeparablePointFlexConv")
class SeparablePointFlexConv(PointConv):
    """Depthwise continuous kernel on 3D offsets with a Gaussian mask, then a 1x1 mixer."""

    def __init__(self, in_channels: int, out_channels: int, data_dim: int = 3, **kwargs):
        kwargs.setdefault("mask_type", "gaussian")
        super().__init__(
            in_channels, out_channels, data_dim, separable=True, distance=False, **kwargs
        )


@POINT_CONVS.register("SeparablePointFlexConvDist")
class SeparablePointFlexConvDist(PointConv):
    """Our definition: kernel and mask read the distance ``|p_i - p_j|`` (rotation invariant)."""

    def __init__(self, in_channels: int, out_channels: int, data_dim: int = 3, **kwargs):
        kwargs.setdefault("mask_type", "gaussian")
        super().__init__(
            in_channels, out_channels, data_dim, separable=True, distance=True, **kwargs
        )


@POINT_CONVS.register("PointFlexConv")
class PointFlexConv(PointConv):
    """Dense continuous kernel ``(c_out, c_in)`` per edge with a Gaussian mask (no mixer)."""

    def __init__(self, in_channels: int, out_channels: int, data_dim: int = 3, **kwargs):
        kwargs.setdefault("mask_type", "gaussian")
        super().__init__(in_channels, out_channels, data_dim, separable=False, **kwargs)


def build_point_conv(
    conv_type: str | type, in_channels: int, out_channels: int, data_dim: int = 3, **kwargs
) -> PointConv:
    """Build a registered point conv (unknown names raise a KeyError listing the known ones)."""
    return POINT_CONVS.build(conv_type, in_channels, out_channels, data_dim, **kwargs)


def point_convs(model: nn.Module) -> list[PointConv]:
    return [m for m in model.modules() if isinstance(m, PointConv)]
