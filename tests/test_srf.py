"""SRF / N-Jet convolution: analytic Gaussian-derivative basis, scale-driven size, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from ccnn.nn.conv import CONVS, build_conv
from ccnn.nn.functional import conv_nd
from ccnn.nn.params import parameter_groups
from ccnn.nn.srf import (
    SRF_SCALE,
    SRFConv,
    derivative_orders,
    gaussian_basis,
    gaussian_derivatives,
    num_basis_functions,
)


def _gauss(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.exp(-(x**2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)


def _finite_difference(x: torch.Tensor, sigma: float, n: int, h: float) -> torch.Tensor:
    """n-th central difference of the Gaussian: sum_j (-1)^j C(n, j) G(x + (n/2 - j) h) / h^n."""
    total = torch.zeros_like(x)
    for j in range(n + 1):
        total += (-1) ** j * math.comb(n, j) * _gauss(x + (n / 2 - j) * h, sigma)
    return total / h**n


@pytest.mark.parametrize("sigma", [0.7, 1.0, 2.5])
def test_basis_is_the_analytic_scale_normalised_gaussian_derivatives(sigma):
    x = torch.linspace(-4 * sigma, 4 * sigma, 101, dtype=torch.float64)
    analytic = gaussian_derivatives(x, sigma, order=4)
    assert analytic.shape == (5, 101)
    for n in range(5):
        numeric = sigma**n * _finite_difference(x, sigma, n, h=5e-3 * sigma)
        scale = analytic[n].abs().max()
        torch.testing.assert_close(analytic[n] / scale, numeric / scale, rtol=0, atol=1e-4)


def test_2d_basis_is_the_separable_product_in_total_order():
    assert num_basis_functions(3, 2) == 10 and num_basis_functions(4, 2) == 15
    assert num_basis_functions(3, 1) == 4
    orders = derivative_orders(2, 2)
    assert orders == [(0, 0), (1, 0), (0, 1), (2, 0), (1, 1), (0, 2)]
    ax = torch.arange(-5, 6, dtype=torch.float64)
    basis = gaussian_basis([ax, ax], [1.3, 1.3], order=3)
    assert basis.shape == (10, 11, 11)
    g = gaussian_derivatives(ax, 1.3, 3)
    for i, (a, b) in enumerate(derivative_orders(3, 2)):
        torch.testing.assert_close(basis[i], g[a][:, None] * g[b][None, :])


@pytest.mark.parametrize("data_dim, spatial", [(1, (64,)), (2, (32, 32))])
def test_kernel_size_follows_the_scale(data_dim, spatial):
    conv = SRFConv(2, 3, data_dim, order=2, init_scale=0.0)
    x = torch.randn(1, 2, *spatial)
    expected = {-1.0: 5, 0.0: 7, 1.0: 11, 2.0: 19}  # 2 * ceil(2 sigma + 0.5) + 1, sigma = 2^scale
    for scale, size in expected.items():
        with torch.no_grad():
            conv.scale.fill_(scale)
        out = conv(x)
        assert out.shape == (1, 3, *spatial)
        assert conv.last_kernel.shape == (3, 2) + (size,) * data_dim
        assert conv.kernel_size() == (size,) * data_dim
    # a kernel larger than the input is capped without changing the result
    with torch.no_grad():
        conv.scale.fill_(4.0)  # sigma 16 -> 67 taps
    small = torch.randn(1, 2, *([9] * data_dim))
    capped = conv(small)
    assert conv.last_kernel.shape[2:] == (17,) * data_dim
    uncapped = conv.sample_kernel()
    assert uncapped.shape[2:] == (67,) * data_dim
    reference = conv_nd(small, uncapped, conv.bias)
    torch.testing.assert_close(capped, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("data_dim", [1, 2])
def test_gradient_reaches_scale_and_coefficients(data_dim):
    conv = build_conv("SRF", 3, 4, data_dim, order=3, init_scale=0.3)
    assert isinstance(conv, SRFConv) and "SRF" in CONVS
    assert conv.weight.shape == (4, 3, num_basis_functions(3, data_dim))
    x = torch.randn(2, 3, *([16] * data_dim))
    (conv(x) ** 2).mean().backward()
    assert conv.scale.grad is not None and conv.scale.grad.abs() > 0
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert conv.bias.grad is not None


def test_scale_parameter_is_tagged_for_its_own_group():
    conv = SRFConv(2, 2, 2)
    groups = parameter_groups(conv, groups=(SRF_SCALE,))
    assert groups[SRF_SCALE] == [conv.scale]
    assert "srf_scale" not in parameter_groups(conv)  # default groups leave it in "default"


def test_causal_1d_sees_only_the_past():
    conv = SRFConv(1, 2, 1, causal=True, init_scale=1.0)
    x = torch.randn(1, 1, 50)
    y = x.clone()
    y[..., 30:] += 5.0
    torch.testing.assert_close(conv(x)[..., :30], conv(y)[..., :30])
    assert conv.last_kernel.shape[-1] == 6  # offsets -5..0
    with pytest.raises(ValueError, match="causal"):
        SRFConv(1, 1, 2, causal=True)


def test_set_resolution_preserves_the_response_to_a_resampled_signal():
    torch.manual_seed(0)
    # k=4: truncate at 4 sigma at both rates, so only the sampling differs
    conv = SRFConv(1, 3, 1, order=2, init_scale=1.0, k=4.0, bias=False).double()
    t = torch.arange(200, dtype=torch.float64)

    def signal(u):
        return torch.sin(2 * math.pi * u / 37) + 0.5 * torch.cos(2 * math.pi * u / 23)

    low = signal(t)[None, None]  # 200 samples
    high = signal(torch.arange(400, dtype=torch.float64) / 2)[None, None]  # same signal, 2x rate
    with torch.no_grad():
        y_low = conv(low)
        conv.set_resolution(2.0)
        y_high = conv(high)
        conv.set_resolution(None)
    inner = slice(20, 180)
    torch.testing.assert_close(y_high[..., ::2][..., inner], y_low[..., inner], rtol=0, atol=2e-3)


def test_finer_grid_without_amplitude_rescaling_is_refused_and_state_kept():
    """``at_resolution(..., rescale_amplitude=False)`` (sparse observations on a finer grid) is
    not available for SRF layers: a clear error, and the layer keeps its resolution."""
    from ccnn.nn.resolution import at_resolution

    model = torch.nn.Sequential(SRFConv(1, 2, 1, order=1))
    model[0].set_resolution(2.0)
    with pytest.raises(ValueError, match="SRFConv cannot be sampled on a finer grid"):
        with at_resolution(model, 3.0, rescale_amplitude=False):
            pass
    assert model[0]._resolution_scale == (2.0,)
    with at_resolution(model, 3.0):
        assert model[0]._resolution_scale == (3.0,)
    assert model[0]._resolution_scale == (2.0,)
