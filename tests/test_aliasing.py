"""Anti-aliasing (FlexConv §3.3, appendix A): the analytic frequency bound against measured
spectra, the regulariser's values and gradients, and the per-layer report/plot."""

from __future__ import annotations

import math

import pytest
import torch

from ccnn.nn import FlexConv, GaussianMask, MAGNet
from ccnn.nn.aliasing import (
    AntiAliasingRegularizer,
    frequency_report,
    magnet_layer_frequencies,
    mask_frequency,
    nyquist_frequency,
)
from ccnn.train.plots import plot_frequency_report

TWO_PI = 2 * math.pi


def energy_above(values: torch.Tensor, step: float, f_max: float) -> float:
    """Fraction of spectral energy with any |f_d| > f_max (f in cycles per unit of x).

    ``values``: ``(n_1, ..., n_d, channels)`` sampled with spacing ``step`` in every dim.
    """
    dims = tuple(range(values.dim() - 1))
    power = torch.fft.fftn(values, dim=dims).abs().pow(2).sum(-1)
    freqs = torch.meshgrid(
        *[torch.fft.fftfreq(n, d=step) for n in values.shape[:-1]], indexing="ij"
    )
    above = torch.zeros_like(power, dtype=torch.bool)
    for f in freqs:
        above |= f.abs() > f_max
    return float(power[above].sum() / power.sum())


def sample(fn, data_dim: int, n: int, extent: float) -> tuple[torch.Tensor, float]:
    axis = torch.linspace(-extent, extent, n, dtype=torch.float64)
    positions = torch.stack(torch.meshgrid(*[axis] * data_dim, indexing="ij"), -1).reshape(
        -1, data_dim
    )
    with torch.no_grad():
        values = fn(positions)
    return values.reshape(*[n] * data_dim, -1), 2 * extent / (n - 1)


def flexconv_magnet(data_dim: int) -> MAGNet:
    """A random-init MAGNet with the FlexConv initialisation (input_scale 25.6, 32 x 3)."""
    return MAGNet(
        data_dim,
        4,
        hidden_channels=32,
        num_layers=3,
        input_scale=25.6,
        init="flexconv",
        init_spatial_value=1.667 * 0.075,
    ).double()


def test_nyquist_frequency():
    assert (
        nyquist_frequency(33) == 8.0
        and nyquist_frequency(17) == 4.0
        and nyquist_frequency(3) == 0.5
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_magnet_bound_holds_for_the_measured_spectrum_1d(seed):
    torch.manual_seed(seed)
    net = flexconv_magnet(1)
    f_max = float(magnet_layer_frequencies(net).sum().detach())
    # The MAGNet is defined on all of R; sample it on [-8, 8] (it has decayed there) finely:
    # step 1/512 -> the sampling Nyquist (256) is far above f_max (~50).
    values, step = sample(lambda p: net(p) - net.output_linear.bias, 1, 8193, 8.0)
    assert 1 / (2 * step) > 3 * f_max
    assert energy_above(values, step, f_max) < 1e-3


@pytest.mark.parametrize("seed", [0, 1])
def test_flexconv_kernel_bound_holds_for_the_measured_spectrum_2d(seed):
    torch.manual_seed(seed)
    net = flexconv_magnet(2)
    mask = GaussianMask(2, init_value=0.075).double()
    f_max = float((magnet_layer_frequencies(net).sum() + mask_frequency(mask)).detach())
    # 257 x 257 points on [-1, 1]: step 1/128, sampling Nyquist 64 > f_max (~50)
    values, step = sample(lambda p: net(p) * mask(p)[:, None], 2, 257, 1.0)
    assert 1 / (2 * step) > f_max
    assert energy_above(values, step, f_max) < 1e-3


def test_bound_is_tight_for_a_single_product_of_two_gabors():
    """Two units, tiny envelopes' spreads: the spectrum peaks at (W_0 + W_1) / 2 pi and the
    bound (W_0 + W_1 + s(gamma_0 + gamma_1)) / 2 pi sits just above it (units check)."""
    net = MAGNet(1, 1, hidden_channels=1, num_layers=1, init="flexconv").double()
    with torch.no_grad():
        net.filter_linears[0].weight.fill_(TWO_PI * 6.0)
        net.filter_linears[1].weight.fill_(TWO_PI * 4.0)
        for lin in net.filter_linears:
            lin.bias.zero_()
        for g in net.gammas:
            g.fill_(1.0)
        for m in net.mus:
            m.zero_()
        net.hidden_linears[0].weight.fill_(1.0)
        net.hidden_linears[0].bias.zero_()
        net.output_linear.weight.fill_(1.0)
        net.output_linear.bias.zero_()
    f_max = float(magnet_layer_frequencies(net, gauss_stddevs=2.0).sum().detach())
    assert f_max == pytest.approx(10.0 + 2 * 2.0 / TWO_PI)
    values, step = sample(net, 1, 4097, 16.0)
    assert energy_above(values, step, f_max) < 1e-3
    assert energy_above(values, step, 9.0) > 0.3  # the energy at 10 cycles/unit is real


def _one_unit_flexconv(k: int) -> FlexConv:
    """1D FlexConv whose MAGNet has 1 unit and 2 Gabor layers with hand-set frequencies:
    f_0 = 3 + 2 = 5, f_1 = 1 + 1 = 2, f_mask = 4 (s = 2); grid k."""
    conv = FlexConv(
        1,
        1,
        1,
        kernel_type="MAGNet",
        kernel_size=k,
        kernel_kwargs={"hidden_channels": 1, "num_layers": 1, "init": "flexconv"},
        mask_kwargs={"init_value": 0.5},
    )
    with torch.no_grad():
        net = conv.kernel_net
        net.filter_linears[0].weight.fill_(-TWO_PI * 3.0)  # |W| is what counts
        net.gammas[0].fill_(TWO_PI * 1.0)  # s * gamma / 2 pi = 2
        net.filter_linears[1].weight.fill_(TWO_PI * 1.0)
        net.gammas[1].fill_(-TWO_PI * 0.5)  # |gamma| (the envelope uses gamma^2)
        conv.mask.sigma.fill_(2.0 / (TWO_PI * 4.0))  # f_mask = s / (2 pi sigma) = 4
    return conv


@pytest.mark.parametrize(
    "target, method, expected",
    [
        ("gabor+mask", "summed", (5 + 2 + 4 - 2) ** 2),  # f_Nyq(9) = 2
        ("gabor", "summed", (5 + 2 - 2) ** 2),
        ("gabor+mask", "together", (5 + 4 / 2 - 2 / 2) ** 2 + (2 + 4 / 2 - 2 / 2) ** 2),
        ("gabor", "together", (5 - 1) ** 2 + (2 - 1) ** 2),
    ],
)
def test_summed_and_together_on_a_hand_computed_example(target, method, expected):
    conv = _one_unit_flexconv(9)
    torch.testing.assert_close(
        magnet_layer_frequencies(conv.kernel_net).detach(),
        torch.tensor([5.0, 2.0]),
        rtol=1e-5,
        atol=1e-5,
    )
    assert mask_frequency(conv.mask).item() == pytest.approx(4.0, rel=1e-5)
    reg = AntiAliasingRegularizer(target=target, method=method)
    net = torch.nn.Sequential(conv, torch.nn.ReLU(), _one_unit_flexconv(9))  # two layers sum up
    assert reg(net).item() == pytest.approx(2 * expected, rel=1e-4)


def test_layer_frequency_takes_the_two_maxima_separately():
    """SPEC §3.3: f_l = max|W_l| / 2pi + s max gamma_l / 2pi, the maxima over units taken
    separately (published broadcasting), not max over units of |W| + s gamma. Two units whose
    largest |W| and largest gamma belong to different units tell the two apart."""
    net = MAGNet(data_dim=2, out_channels=1, hidden_channels=2, num_layers=1, omega_0=1.0)
    with torch.no_grad():
        for linear, gamma in zip(net.filter_linears, net.gammas):
            linear.weight.copy_(torch.tensor([[TWO_PI * 5.0, 0.0], [TWO_PI * 1.0, 0.0]]))
            gamma.copy_(torch.tensor([[TWO_PI * 0.1, 0.0], [0.0, TWO_PI * 3.0]]))
    want = 5.0 + 2.0 * 3.0  # per unit the bound would be max(5 + 0.2, 1 + 6) = 7
    torch.testing.assert_close(
        magnet_layer_frequencies(net).detach(), torch.tensor([want, want]), rtol=1e-6, atol=1e-5
    )
    torch.testing.assert_close(
        magnet_layer_frequencies(net, per_dim=True).detach(),
        torch.tensor([[5.0 + 2 * 0.1, 2 * 3.0]] * 2),
        rtol=1e-6,
        atol=1e-5,
    )


def test_nyquist_follows_the_grid_and_the_resolution():
    conv = _one_unit_flexconv(9)
    reg = AntiAliasingRegularizer(target="gabor", method="summed")
    assert reg(conv).item() == pytest.approx((7 - 2) ** 2, rel=1e-4)
    conv.set_resolution(2.0)  # 17-point grid: f_Nyq = 4
    assert reg(conv).item() == pytest.approx((7 - 4) ** 2, rel=1e-4)
    conv.set_resolution(4.0)  # 33 points: f_Nyq = 8 > 7
    assert reg(conv).item() == 0.0


def test_regulariser_is_zero_below_nyquist():
    torch.manual_seed(0)
    conv = FlexConv(
        2,
        2,
        2,
        kernel_type="MAGNet",
        kernel_size=97,  # f_Nyq = 24
        kernel_kwargs={
            "hidden_channels": 8,
            "num_layers": 2,
            "init": "flexconv",
            "input_scale": 1.0,
        },
        mask_kwargs={"init_value": 0.5},
    )
    report = frequency_report(conv)
    assert report[0]["ok"] and max(report[0]["f_layers"]) + report[0]["f_mask"] / 3 < 24 / 3
    for method in ("summed", "together"):
        penalty = AntiAliasingRegularizer(target="gabor+mask", method=method)(conv)
        assert penalty.item() == 0.0


def test_regulariser_is_positive_differentiable_and_pushes_frequencies_down():
    torch.manual_seed(0)
    conv = FlexConv(
        2,
        2,
        2,
        kernel_type="MAGNet",
        kernel_size=17,
        kernel_kwargs={"hidden_channels": 8, "num_layers": 2, "init": "flexconv"},
        mask_kwargs={"init_value": 0.075},
    )
    reg = AntiAliasingRegularizer(target="gabor+mask", method="together")
    penalty = reg(conv)
    assert penalty > 0 and penalty.requires_grad
    penalty.backward()
    net = conv.kernel_net
    for lin, gamma in zip(net.filter_linears, net.gammas):
        assert lin.weight.grad.abs().sum() > 0 and gamma.grad.abs().sum() > 0
        # the gradient only raises |W| / gamma where that lowers the penalty: never
        assert (lin.weight.grad * lin.weight.sign() >= 0).all()
        assert (gamma.grad * gamma.sign() >= 0).all()
    assert (conv.mask.sigma.grad <= 0).all() and conv.mask.sigma.grad.sum() < 0  # widen the mask
    before = magnet_layer_frequencies(net).tolist()
    opt = torch.optim.SGD(conv.parameters(), lr=1e-3)
    for _ in range(5):
        opt.zero_grad()
        reg(conv).backward()
        opt.step()
    after = magnet_layer_frequencies(net).tolist()
    assert all(a < b for a, b in zip(after, before))
    assert reg(conv).item() < penalty.item()


def test_bad_names_raise_listing_the_supported_ones():
    with pytest.raises(ValueError, match="gabor\\+mask"):
        AntiAliasingRegularizer(target="sines")
    with pytest.raises(ValueError, match="together"):
        AntiAliasingRegularizer(method="distributed")
    with pytest.raises(ValueError, match="l2_relu"):
        AntiAliasingRegularizer(fn="offset_elu")
    with pytest.raises(ValueError, match="MAGNet"):
        AntiAliasingRegularizer()(torch.nn.Conv2d(1, 1, 3))


def test_isotropic_gabor_uses_the_square_root_of_gamma():
    from ccnn.nn import GaborMFN

    net = GaborMFN(1, 1, hidden_channels=1, num_layers=1)
    with torch.no_grad():
        for lin, g in zip(net.filter_linears, net.gammas):
            lin.weight.fill_(0.0)
            g.fill_(4.0)  # exp(-1/2 * 4 x^2): spatial std 1/2 -> spectral std 2 / (2 pi)
    torch.testing.assert_close(magnet_layer_frequencies(net, 1.0), torch.full((2,), 2.0 / TWO_PI))


def test_report_and_plot(tmp_path):
    from ccnn.models.flexnet import FlexNet, flexnet_7_conv_kwargs

    conv_kwargs = flexnet_7_conv_kwargs(17)
    conv_kwargs["kernel_kwargs"] = {**conv_kwargs["kernel_kwargs"], "hidden_channels": 8}
    model = FlexNet(3, 10, 2, hidden_channels=4, num_blocks=1, conv_kwargs=conv_kwargs)
    model(torch.randn(1, 3, 16, 16))
    report = frequency_report(model)
    assert [r["name"] for r in report] == ["stem", "blocks.0.conv1", "blocks.0.conv2"]
    for r in report:
        assert r["kernel_size"] == [17, 17] and r["f_nyquist"] == 4.0
        assert r["f_max"] == pytest.approx(r["f_magnet"] + r["f_mask"])
        assert r["f_magnet"] == pytest.approx(sum(r["f_layers"]))
        assert r["ok"] == (r["f_max"] <= r["f_nyquist"])
    path = plot_frequency_report(report, tmp_path / "plots" / "freq.png")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
