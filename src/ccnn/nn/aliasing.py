"""Analytic maximum frequency of MAGNet kernels and the anti-aliasing regulariser
(FlexConv, Romero, Bruintjes et al., arXiv:2110.08059, §3.3 and appendix A).

Legend: l Gabor layer (L + 1 of them) · h hidden units · d data_dim · k kernel grid size.

Frequencies are in cycles per unit of the kernel coordinate x; kernels live on ``[-1, 1]``.

* A Gabor filter ``exp(-1/2 sum_d (gamma_d (x_d - mu_d))^2) sin(W x + c)`` has its spectrum
  centred at ``|W_d| / (2 pi)`` in dim d with a Gaussian spread of standard deviation
  ``gamma_d / (2 pi)``. Taking ``s`` standard deviations (``gauss_stddevs``) as its extent, layer
  l of a MAGNet reaches at most (per dim, and over dims)::

      f_l = max_{i, d} |W_{l,i,d}| / (2 pi) + s max_{i, d} |gamma_{l,i,d}| / (2 pi)

  (isotropic ``Gabor`` kernels, ``exp(-1/2 gamma |x - mu|^2)``, spread with ``sqrt(gamma)``).
  This is the published implementation (SPEC §3.3): its broadcasting takes the two maxima
  separately, a looser bound than the maximum over units of ``|W| + s gamma``; we keep it so
  the paper's regularisation strength is reproduced.
* Products of filters add frequencies, so the MAGNet output stays below ``sum_l f_l``
  (Fathony et al., 2021); the Gaussian mask ``exp(-1/2 sum_d (x_d - mu_d)^2 / sigma_d^2)`` adds
  ``f_mask = s max_d (1 / sigma_d) / (2 pi)``.
* A grid of k points on ``[-1, 1]`` has step ``2 / (k - 1)``, so its Nyquist frequency is
  ``f_Nyq(k) = (k - 1) / 4``. k is the layer's grid BEFORE the mask crops it (the training
  grid, or the resolution-scaled grid after ``set_resolution``).

Regulariser (``kernel.regularize_params``), per FlexConv layer, ``fn = l2_relu``:

* ``method="summed"``:   ``ReLU(sum_l f_l [+ f_mask] - f_Nyq)^2``
* ``method="together"``: ``sum_l ReLU(f_l [+ f_mask / (L+1)] - f_Nyq / (L+1))^2``

(``[+ f_mask]`` for ``target="gabor+mask"``), summed over layers. The returned penalty is
before ``factor``: the training loop multiplies it by the loss-term weight.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ccnn.errors import OptionError
from ccnn.nn.conv import ContinuousConv
from ccnn.nn.kernels import KERNELS, _GaborNet
from ccnn.nn.masks import GaussianMask

TARGETS = ("gabor", "gabor+mask")
METHODS = ("together", "summed")
FUNCTIONS = ("l2_relu",)
GABOR_KERNELS = tuple(n for n in KERNELS.names() if issubclass(KERNELS.get(n), _GaborNet))
"""Kernel types whose maximum frequency is analytic (Gabor-based), the ones regularised."""


def nyquist_frequency(kernel_size: int) -> float:
    """Nyquist frequency of ``kernel_size`` samples on ``[-1, 1]``: ``(k - 1) / 4``."""
    return (float(kernel_size) - 1.0) / 4.0


def _envelope_widths(kernel_net: _GaborNet) -> list[torch.Tensor]:
    """Per layer, the spectral std (radians) of each unit's envelope, ``(h, d)`` or ``(h, 1)``."""
    if kernel_net.anisotropic:
        return [g.abs() for g in kernel_net.gammas]
    return [g.abs().sqrt() for g in kernel_net.gammas]


def magnet_layer_frequencies(
    kernel_net: nn.Module, gauss_stddevs: float = 2.0, per_dim: bool = False
) -> torch.Tensor:
    """Maximum frequency of each Gabor layer of a MAGNet/Gabor kernel net (differentiable).

    ``f_l = (max_{i,d} |W_{l,i,d}| + s max_{i,d} gamma_{l,i,d}) / (2 pi)`` (the two maxima
    taken separately, as published); ``per_dim`` keeps d.

    Shapes: ``-> (L + 1,)`` or ``(L + 1, d)`` with ``per_dim``.
    """
    if not isinstance(kernel_net, _GaborNet):
        raise TypeError(
            "the analytic frequency bound needs a MAGNet or Gabor kernel net, got "
            f"{type(kernel_net).__name__}"
        )
    freqs = []
    for linear, width in zip(kernel_net.filter_linears, _envelope_widths(kernel_net)):
        w, g = linear.weight.abs(), width.abs()  # (h, d), (h, d) or (h, 1)
        if per_dim:
            freqs.append((w.amax(dim=0) + gauss_stddevs * g.amax(dim=0)) / (2 * math.pi))
        else:
            freqs.append((w.max() + gauss_stddevs * g.max()) / (2 * math.pi))
    return torch.stack(freqs)


def mask_frequency(
    mask: GaussianMask, gauss_stddevs: float = 2.0, per_dim: bool = False
) -> torch.Tensor:
    """``s max_d (1 / sigma_d) / (2 pi)`` with the mask's own ``sqrt(sigma^2 + 1e-8)``.

    Shapes: ``-> ()`` or ``(d,)`` with ``per_dim``.
    """
    inv = gauss_stddevs / (mask.sigma.pow(2) + 1e-8).sqrt() / (2 * math.pi)  # (d,)
    return inv if per_dim else inv.max()


def kernel_grid_sizes(layer: ContinuousConv) -> tuple[int, ...]:
    """The layer's current pre-crop grid size per dim (training or resolution-scaled grid)."""
    if int(layer.grid_size[0]) == 0:
        raise RuntimeError(
            f"{type(layer).__name__} has no kernel grid yet: run a forward pass first "
            "(kernel_size='same')"
        )
    axes, _ = layer.sampling_grid()
    return tuple(len(a) for a in axes)


def gabor_convs(network: nn.Module) -> list[tuple[str, ContinuousConv]]:
    """``(name, layer)`` for every ContinuousConv whose kernel net is a MAGNet/Gabor net."""
    return [
        (name, m)
        for name, m in network.named_modules()
        if isinstance(m, ContinuousConv) and isinstance(m.kernel_net, _GaborNet)
    ]


def _choice(value: str, supported: tuple[str, ...], what: str) -> str:
    if value not in supported:
        raise OptionError(f"Unknown anti-aliasing {what} '{value}'; supported: {list(supported)}")
    return value


class AntiAliasingRegularizer:
    """Penalty on MAGNet frequencies above the Nyquist frequency of each layer's grid.

    Args:
        target: ``"gabor"`` (MAGNet layers only) or ``"gabor+mask"`` (plus the Gaussian mask).
        method: ``"together"`` (each layer against ``f_Nyq / (L + 1)``) or ``"summed"``.
        fn: ``"l2_relu"``: ``sum ReLU(f - f_Nyq)^2``.
        factor: the loss weight (kept for reference; ``__call__`` returns the unweighted penalty).
        gauss_stddevs: ``s``, standard deviations taken as the extent of a Gaussian's spectrum.

    ``__call__(network)`` visits every ContinuousConv with a MAGNet/Gabor kernel net (a network
    without any raises ValueError: the option would silently do nothing) and returns a scalar.
    """

    def __init__(
        self,
        target: str = "gabor+mask",
        method: str = "together",
        fn: str = "l2_relu",
        factor: float = 0.001,
        gauss_stddevs: float = 2.0,
    ):
        self.target = _choice(target, TARGETS, "target (kernel.regularize_params.target)")
        self.method = _choice(method, METHODS, "method (kernel.regularize_params.method)")
        self.fn = _choice(fn, FUNCTIONS, "function (kernel.regularize_params.fn)")
        if gauss_stddevs < 0:
            raise OptionError(f"gauss_stddevs must be >= 0, got {gauss_stddevs}")
        self.factor, self.gauss_stddevs = float(factor), float(gauss_stddevs)

    def layer_penalty(self, layer: ContinuousConv) -> torch.Tensor:
        """The penalty of one layer (before ``factor``)."""
        f_layers = magnet_layer_frequencies(layer.kernel_net, self.gauss_stddevs)  # (L+1,)
        f_nyq = nyquist_frequency(min(kernel_grid_sizes(layer)))
        f_mask = f_layers.new_zeros(())
        if self.target == "gabor+mask" and layer.mask is not None:
            f_mask = mask_frequency(layer.mask, self.gauss_stddevs)
        if self.method == "summed":
            over = torch.relu(f_layers.sum() + f_mask - f_nyq)
        else:
            n = f_layers.shape[0]
            over = torch.relu(f_layers + f_mask / n - f_nyq / n)
        return over.pow(2).sum()

    def __call__(self, network: nn.Module) -> torch.Tensor:
        layers = gabor_convs(network)
        if not layers:
            raise OptionError(
                "anti-aliasing regularisation (kernel.regularize=True) needs continuous "
                "convolutions with MAGNet or Gabor kernels (kernel.type=MAGNet); this network "
                "has none"
            )
        return torch.stack([self.layer_penalty(layer) for _, layer in layers]).sum()

    def __repr__(self) -> str:
        return (
            f"AntiAliasingRegularizer(target={self.target!r}, method={self.method!r}, "
            f"fn={self.fn!r}, factor={self.factor}, gauss_stddevs={self.gauss_stddevs})"
        )


@torch.no_grad()
def frequency_report(network: nn.Module, gauss_stddevs: float = 2.0) -> list[dict[str, Any]]:
    """Per MAGNet/Gabor layer: its maximum frequency against the Nyquist frequency of its grid.

    Each entry: ``name``, ``kernel_size`` (pre-crop grid per dim), ``f_layers`` (f_l per Gabor
    layer), ``f_magnet`` (their sum), ``f_mask`` (0 without a mask), ``f_max`` (f_magnet + f_mask),
    ``f_nyquist`` and ``ok`` (``f_max <= f_nyquist``).
    """
    report = []
    for name, layer in gabor_convs(network):
        f_layers = magnet_layer_frequencies(layer.kernel_net, gauss_stddevs)
        f_mask = float(mask_frequency(layer.mask, gauss_stddevs)) if layer.mask is not None else 0.0
        sizes = kernel_grid_sizes(layer)
        f_magnet = float(f_layers.sum())
        f_nyq = nyquist_frequency(min(sizes))
        report.append(
            {
                "name": name,
                "kernel_size": list(sizes),
                "f_layers": [float(f) for f in f_layers],
                "f_magnet": f_magnet,
                "f_mask": f_mask,
                "f_max": f_magnet + f_mask,
                "f_nyquist": f_nyq,
                "ok": f_magnet + f_mask <= f_nyq,
            }
        )
    return report
