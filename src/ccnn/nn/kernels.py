"""Kernel networks: small networks mapping relative positions to convolution kernel values.

Legend: p kernel positions · d data_dim · h hidden units · o output channels.

Every kernel network maps positions ``(p, d)`` in ``[-1, 1]^d`` to values ``(p, o)`` and has an
``output_linear`` (the layer "Chang" initialisation rescales). Registered in :data:`KERNELS`:

* ``MAGNet`` — Multiplicative Anisotropic Gabor Network (Romero et al., FlexConv,
  arXiv:2110.08059)::

      g_l(x)_i = exp(-1/2 sum_d (gamma_{l,i,d} (x_d - mu_{l,i,d}))^2) * sin(W_l x + c_l)_i
      h_0 = g_0(x);  h_l = g_l(x) * (A_l h_{l-1} + b_l);  out = A_out h_L + b_out

  ``num_layers`` hidden linears, ``num_layers + 1`` Gabor filters.
  ``init="ccnn"`` (CCNN, arXiv:2206.03398): gamma_l ~ Gamma(alpha/(l+1), beta),
  W_l = default init * 2 pi omega_0 gamma_l, c_l = 0, hidden linears kaiming-uniform (linear
  gain) with bias 1, output kaiming-uniform with bias 0.
  ``init="flexconv"``: W_l = default init * input_scale / sqrt(L+1) * gamma_l, c ~ U(-pi, pi),
  hidden linears U(+-sqrt(1/h)).
  Gabor means: causal and ``init_spatial_value != 1``: mu = 1 - isv * U[0, 1); else
  mu = isv * U[-1, 1].
* ``Gabor`` — MFN with isotropic Gabor filters (Fathony et al., arXiv:2006.07590):
  ``g_l(x) = exp(-1/2 gamma_l |x - mu_l|^2) sin(W_l x + c_l)``, gamma ~ Gamma(alpha/(L+1), beta),
  W scaled by ``input_scale / sqrt(L+1) * sqrt(gamma)``.
* ``Fourier`` — Fourier MFN: ``g_l(x) = sin(W_l x + c_l)``, W scaled by input_scale/sqrt(L+1).
* ``SIREN`` — ``sin(omega_0 (W x + b))`` layers (Sitzmann et al., arXiv:2006.09661), plain
  linear output; ``num_layers`` counts all linear layers including the output one.
* ``RFNet`` — random Fourier features ``[cos(x B), sin(x B)]``, B ~ N(0, (2 pi omega_0)^2) fixed,
  then a ReLU MLP; ``num_layers`` counts the linear layers after the features.
* ``MLP`` — plain MLP with a chosen activation and norm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ccnn.errors import OptionError
from ccnn.nn.layers import get_activation
from ccnn.nn.params import OMEGA_0, tag_parameter
from ccnn.registry import Registry

KERNELS: Registry = Registry("kernel type")

MAGNET_INITS = ("ccnn", "flexconv")


CONTEXT_OPTIONS = frozenset({"causal", "init_spatial_value"})
"""Options a conv layer hands to whatever kernel it builds (causality, the mask's initial
extent); kernel types that have no use for them do not receive them."""


def kernel_options(kernel_type: str | type) -> tuple[str, ...]:
    """The options a kernel type takes (its constructor's keyword arguments)."""
    skip = ("data_dim", "out_channels")
    return tuple(n for n in KERNELS.options(kernel_type) or () if n not in skip)


def check_kernel_options(kernel_type: str | type, options: dict) -> dict:
    """``options`` without the context options the type does not take; any other option it
    does not take is left in, for ``KERNELS.build`` to reject naming the type and its
    options."""
    accepted = set(kernel_options(kernel_type))
    return {k: v for k, v in options.items() if k in accepted or k not in CONTEXT_OPTIONS}


class KernelNet(nn.Module):
    """Base class. Subclasses set ``output_linear`` and implement ``forward((p, d)) -> (p, o)``.

    Constructors take ``data_dim``, ``out_channels`` and their own keyword options
    (:func:`kernel_options`); :func:`build_kernel_net` rejects any other option by name.
    """

    output_linear: nn.Linear

    def __init__(self, data_dim: int, out_channels: int, hidden_channels: int, num_layers: int):
        super().__init__()
        if data_dim not in (1, 2, 3):
            raise OptionError(f"data_dim must be 1, 2 or 3, got {data_dim}")
        if hidden_channels < 1 or num_layers < 1:
            raise OptionError(
                f"kernel hidden_channels and num_layers must be >= 1, got {hidden_channels} "
                f"and {num_layers} (set kernel.no_hidden / kernel.no_layers)"
            )
        self.data_dim, self.out_channels = data_dim, out_channels
        self.hidden_channels, self.num_layers = hidden_channels, num_layers

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 2 or x.shape[-1] != self.data_dim:
            raise OptionError(
                f"{type(self).__name__} expects positions of shape (p, {self.data_dim}), got "
                f"{tuple(x.shape)}"
            )


def _scale_default_init(linear: nn.Linear, factor: torch.Tensor | float) -> None:
    with torch.no_grad():
        linear.weight.mul_(factor)


class _MultiplicativeFilterNet(KernelNet):
    """Shared body of MFNs: ``h_l = g_l(x) * (A_l h_{l-1} + b_l)``."""

    def __init__(self, data_dim, out_channels, hidden_channels, num_layers, bias):
        super().__init__(data_dim, out_channels, hidden_channels, num_layers)
        self.filter_linears = nn.ModuleList(
            nn.Linear(data_dim, hidden_channels) for _ in range(num_layers + 1)
        )
        self.hidden_linears = nn.ModuleList(
            nn.Linear(hidden_channels, hidden_channels) for _ in range(num_layers)
        )
        self.output_linear = nn.Linear(hidden_channels, out_channels, bias=bias)

    def filter(self, l: int, x: torch.Tensor) -> torch.Tensor:  # (p, d) -> (p, h)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(p, d) -> (p, o)``."""
        self._check(x)
        h = self.filter(0, x)
        for l, linear in enumerate(self.hidden_linears, start=1):
            h = self.filter(l, x) * linear(h)
        return self.output_linear(h)


DEFAULT_INPUT_SCALE = 25.6
"""MAGNet/Gabor/Fourier ``input_scale`` with the FlexConv initialisation (the published value)."""
DEFAULT_OMEGA_0 = 100.0
"""MAGNet/Gabor ω0 when a layer is built without one (the digits main job's value, for inputs of
about 64–256 steps per dimension). The paper commands set ``kernel.omega_0`` per dataset; for
long series scale it with the length (our UEA preset uses 0.5 × length)."""


class _GaborNet(_MultiplicativeFilterNet):
    """MFN with Gabor filters; ``anisotropic`` selects MAGNet (one gamma per unit and dim)."""

    anisotropic = True

    def __init__(
        self,
        data_dim: int,
        out_channels: int,
        hidden_channels: int = 32,
        num_layers: int = 3,
        omega_0: float | None = None,
        input_scale: float | None = None,
        init: str = "ccnn",
        bias: bool = True,
        causal: bool = False,
        init_spatial_value: float = 1.0,
        alpha: float = 6.0,
        beta: float = 1.0,
    ):
        super().__init__(data_dim, out_channels, hidden_channels, num_layers, bias)
        if init not in MAGNET_INITS:
            raise OptionError(f"Unknown MAGNet init '{init}'; supported: {list(MAGNET_INITS)}")
        name = type(self).__name__
        if init == "ccnn" and input_scale is not None:
            raise OptionError(
                f"{name} with init='ccnn' scales its frequencies with omega_0 and does not use "
                "input_scale; drop input_scale or use init='flexconv'"
            )
        if init == "flexconv" and omega_0 is not None:
            raise OptionError(
                f"{name} with init='flexconv' scales its frequencies with input_scale and does "
                "not use omega_0; drop omega_0 or use init='ccnn'"
            )
        omega_0 = DEFAULT_OMEGA_0 if omega_0 is None else omega_0
        input_scale = DEFAULT_INPUT_SCALE if input_scale is None else input_scale
        self.init, self.omega_0, self.input_scale = init, omega_0, input_scale
        g_dim = data_dim if self.anisotropic else 1
        self.gammas = nn.ParameterList()
        self.mus = nn.ParameterList()
        L = num_layers
        for l, linear in enumerate(self.filter_linears):
            if self.anisotropic:
                concentration = alpha / (l + 1)
            else:
                concentration = alpha / (L + 1)
            gamma = torch.distributions.Gamma(concentration, beta).sample((hidden_channels, g_dim))
            self.gammas.append(nn.Parameter(gamma))
            self.mus.append(
                nn.Parameter(self._init_mu(hidden_channels, causal, init_spatial_value))
            )
            with torch.no_grad():
                if init == "ccnn":
                    if omega_0 <= 0:
                        raise OptionError(
                            "MAGNet with init='ccnn' needs omega_0 > 0 (kernel.omega_0), "
                            f"got {omega_0}"
                        )
                    linear.weight.mul_(2 * math.pi * omega_0 * gamma)
                    linear.bias.zero_()
                else:
                    scale = input_scale / math.sqrt(L + 1)
                    factor = gamma if self.anisotropic else gamma.sqrt()
                    linear.weight.mul_(scale * factor)
                    linear.bias.uniform_(-math.pi, math.pi)
        with torch.no_grad():
            for linear in self.hidden_linears:
                if init == "ccnn":
                    nn.init.kaiming_uniform_(linear.weight, nonlinearity="linear")
                    linear.bias.fill_(1.0)
                else:
                    bound = math.sqrt(1.0 / hidden_channels)
                    linear.weight.uniform_(-bound, bound)
            if init == "ccnn":
                nn.init.kaiming_uniform_(self.output_linear.weight, nonlinearity="linear")
                if self.output_linear.bias is not None:
                    self.output_linear.bias.zero_()

    def _init_mu(self, hidden: int, causal: bool, isv: float) -> torch.Tensor:
        if causal and isv != 1.0:
            return 1.0 - isv * torch.rand(hidden, self.data_dim)
        return isv * (2 * torch.rand(hidden, self.data_dim) - 1)

    def envelope(self, l: int, x: torch.Tensor) -> torch.Tensor:
        """Gaussian envelope of Gabor layer ``l``. Shapes: ``(p, d) -> (p, h)``.

        For ``d > 1`` the squared Mahalanobis distance is expanded into matrix products,
        ``sum_d g_d^2 (x_d - mu_d)^2 = x^2 @ (g^2)^T - 2 x @ (g^2 mu)^T + sum_d g_d^2 mu_d^2``,
        which never materialises a ``(p, h, d)`` tensor (point clouds evaluate the kernel at
        every edge). :meth:`envelope_reference` is the direct formula.
        """
        if x.shape[-1] == 1:
            return self.envelope_reference(l, x)
        gamma, mu = self.gammas[l], self.mus[l]  # (h, d or 1), (h, d)
        g2 = gamma.pow(2) if self.anisotropic else gamma.expand_as(mu)  # (h, d)
        q = x.pow(2) @ g2.t() - 2 * x @ (g2 * mu).t() + (g2 * mu.pow(2)).sum(-1)  # (p, h)
        return torch.exp(-0.5 * q.clamp_min(0))

    def envelope_reference(self, l: int, x: torch.Tensor) -> torch.Tensor:
        """Direct evaluation of :meth:`envelope` (reference for tests)."""
        diff = x[:, None, :] - self.mus[l][None]  # (p, h, d)
        if self.anisotropic:
            return torch.exp(-0.5 * (self.gammas[l][None] * diff).pow(2).sum(-1))  # (p, h)
        return torch.exp(-0.5 * self.gammas[l][None, :, 0] * diff.pow(2).sum(-1))

    def filter(self, l: int, x: torch.Tensor) -> torch.Tensor:
        return self.envelope(l, x) * torch.sin(self.filter_linears[l](x))  # (p, h)


@KERNELS.register("MAGNet")
class MAGNet(_GaborNet):
    """Multiplicative Anisotropic Gabor Network. See the module docstring for maths and init."""

    anisotropic = True


@KERNELS.register("Gabor", "MFNGabor", "GaborNet")
class GaborMFN(_GaborNet):
    """Multiplicative filter network with isotropic Gabor filters."""

    anisotropic = False

    def __init__(self, *args, init: str = "flexconv", **kwargs):
        super().__init__(*args, init=init, **kwargs)


@KERNELS.register("Fourier", "FourierNet", "MFNFourier")
class FourierMFN(_MultiplicativeFilterNet):
    """Multiplicative filter network with sine filters ``sin(W_l x + c_l)``."""

    def __init__(
        self,
        data_dim: int,
        out_channels: int,
        hidden_channels: int = 32,
        num_layers: int = 3,
        input_scale: float = 25.6,
        bias: bool = True,
    ):
        super().__init__(data_dim, out_channels, hidden_channels, num_layers, bias)
        with torch.no_grad():
            for linear in self.filter_linears:
                linear.weight.mul_(input_scale / math.sqrt(num_layers + 1))
                linear.bias.uniform_(-math.pi, math.pi)
            for linear in self.hidden_linears:
                bound = math.sqrt(1.0 / hidden_channels)
                linear.weight.uniform_(-bound, bound)

    def filter(self, l: int, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.filter_linears[l](x))


@KERNELS.register("SIREN", "Siren")
class SIREN(KernelNet):
    """``num_layers - 1`` sine layers ``sin(omega_0 (W x + b))`` and a linear output layer."""

    def __init__(
        self,
        data_dim: int,
        out_channels: int,
        hidden_channels: int = 32,
        num_layers: int = 3,
        omega_0: float = 30.0,
        learn_omega_0: bool = False,
        bias: bool = True,
    ):
        super().__init__(data_dim, out_channels, hidden_channels, max(num_layers, 2))
        if omega_0 <= 0:
            raise OptionError(f"SIREN needs omega_0 > 0 (kernel.omega_0), got {omega_0}")
        dims = [data_dim] + [hidden_channels] * (self.num_layers - 1)
        self.sine_linears = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.output_linear = nn.Linear(hidden_channels, out_channels, bias=bias)
        self.omega_0 = nn.Parameter(torch.tensor(float(omega_0)), requires_grad=learn_omega_0)
        if learn_omega_0:
            tag_parameter(self, "omega_0", OMEGA_0)
        with torch.no_grad():
            for i, linear in enumerate([*self.sine_linears, self.output_linear]):
                fan_in = linear.weight.shape[1]
                bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / omega_0
                linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(p, d) -> (p, o)``."""
        self._check(x)
        for linear in self.sine_linears:
            x = torch.sin(self.omega_0 * linear(x))
        return self.output_linear(x)


class _MLPBody(nn.Module):
    def __init__(self, dims: list[int], activation: str, norm: str):
        super().__init__()
        layers: list[nn.Module] = []
        for i, o in zip(dims[:-1], dims[1:]):
            layers.append(nn.Linear(i, o))
            if norm and norm != "Identity":
                layers.append(nn.LayerNorm(o) if norm == "LayerNorm" else nn.BatchNorm1d(o))
            layers.append(get_activation(activation))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@KERNELS.register("MLP")
class MLPKernel(KernelNet):
    """Plain MLP: ``num_layers - 1`` (linear, norm, activation) blocks and a linear output."""

    def __init__(
        self,
        data_dim: int,
        out_channels: int,
        hidden_channels: int = 32,
        num_layers: int = 3,
        activation: str = "ReLU",
        norm: str = "",
        bias: bool = True,
    ):
        super().__init__(data_dim, out_channels, hidden_channels, max(num_layers, 2))
        dims = [data_dim] + [hidden_channels] * (self.num_layers - 1)
        self.body = _MLPBody(dims, activation, norm)
        self.output_linear = nn.Linear(hidden_channels, out_channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(p, d) -> (p, o)``."""
        self._check(x)
        return self.output_linear(self.body(x))


@KERNELS.register("RFNet", "RFF")
class RFNet(KernelNet):
    """Random Fourier features (fixed) followed by a ReLU MLP."""

    def __init__(
        self,
        data_dim: int,
        out_channels: int,
        hidden_channels: int = 32,
        num_layers: int = 3,
        omega_0: float = 1.0,
        activation: str = "ReLU",
        norm: str = "",
        bias: bool = True,
    ):
        super().__init__(data_dim, out_channels, hidden_channels, num_layers)
        if hidden_channels % 2:
            raise OptionError(f"RFNet needs an even hidden size, got {hidden_channels}")
        b = torch.randn(data_dim, hidden_channels // 2) * (2 * math.pi * omega_0)
        self.register_buffer("B", b)
        dims = [hidden_channels] * num_layers
        self.body = _MLPBody(dims, activation, norm)
        self.output_linear = nn.Linear(hidden_channels, out_channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shapes: ``(p, d) -> (p, o)``."""
        self._check(x)
        proj = x @ self.B  # (p, h/2)
        return self.output_linear(self.body(torch.cat([proj.cos(), proj.sin()], dim=-1)))


def build_kernel_net(
    kernel_type: str | type, data_dim: int, out_channels: int, **options
) -> KernelNet:
    """Build a registered kernel network.

    Unknown type names raise a KeyError listing the known ones; unknown options a ValueError.
    """
    options = check_kernel_options(kernel_type, options)
    return KERNELS.build(kernel_type, data_dim=data_dim, out_channels=out_channels, **options)
