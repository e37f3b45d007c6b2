"""Continuous-kernel layers: registries, cropping, state, Chang init, resolution, cache, errors."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from ccnn.nn import (
    CONVS,
    KERNELS,
    Conv,
    FlexConv,
    GaussianMask,
    SeparableCKConv,
    SeparableFlexConv,
    at_resolution,
    build_conv,
    build_kernel_net,
    set_resolution,
    tagged_parameters,
)
from ccnn.nn.params import MASK

KERNEL_OPTIONS = {
    "MAGNet": {"omega_0": 10.0},
    "Gabor": {"input_scale": 10.0},
    "Fourier": {"input_scale": 10.0},
    "SIREN": {"omega_0": 30.0},
    "RFNet": {"omega_0": 1.0},
    "MLP": {},
}
CONTINUOUS = ["CKConv", "FlexConv", "SeparableCKConv", "SeparableFlexConv"]
SPATIAL = {1: (20,), 2: (9, 9), 3: (5, 5, 5)}


def make_conv(conv_type, data_dim, kernel_type="MAGNet", causal=False, **kwargs):
    if conv_type in ("Conv", "SeparableConv"):
        return build_conv(conv_type, 3, 4, data_dim, kernel_size=3, causal=causal, **kwargs)
    options = {"hidden_channels": 8, "num_layers": 2, **KERNEL_OPTIONS[kernel_type]}
    mask = {"init_value": 0.3, "threshold": 0.1} if "Flex" in conv_type else None
    return build_conv(
        conv_type,
        3,
        4,
        data_dim,
        kernel_type=kernel_type,
        kernel_kwargs=options,
        mask_kwargs=mask,
        causal=causal,
        **kwargs,
    )


def test_registries_list_every_type():
    assert set(KERNELS.names()) == {"MAGNet", "Gabor", "Fourier", "SIREN", "RFNet", "MLP"}
    assert {
        "CKConv",
        "FlexConv",
        "SeparableCKConv",
        "SeparableFlexConv",
        "Conv",
        "SeparableConv",
    } <= set(CONVS.names())


LAYER_CASES = [(c, k) for c in CONTINUOUS for k in KERNEL_OPTIONS] + [
    ("Conv", "MAGNet"),
    ("SeparableConv", "MAGNet"),  # discrete: no kernel network
]


@pytest.mark.parametrize("data_dim", [1, 2, 3])
@pytest.mark.parametrize("conv_type,kernel_type", LAYER_CASES)
def test_every_layer_builds_runs_and_trains_every_parameter(conv_type, kernel_type, data_dim):
    torch.manual_seed(0)
    layer = make_conv(conv_type, data_dim, kernel_type)
    x = torch.randn(2, 3, *SPATIAL[data_dim])
    out = layer(x)
    assert out.shape == (2, 4, *SPATIAL[data_dim])
    (out**2).mean().backward()
    for name, p in layer.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name} got no gradient"
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("conv_type", CONTINUOUS + ["Conv", "SeparableConv"])
def test_causal_layers_never_see_the_future(conv_type):
    torch.manual_seed(0)
    layer = make_conv(conv_type, 1, causal=True).eval()
    x = torch.randn(1, 3, 30)
    y = x.clone()
    y[..., 17:] = torch.randn(1, 3, 13)
    with torch.no_grad():
        a, b = layer(x), layer(y)
    assert torch.equal(a[..., :17], b[..., :17])
    assert not torch.allclose(a[..., 17:], b[..., 17:])


def test_cropping_keeps_65_of_784_causal_taps():
    layer = SeparableFlexConv(
        1,
        4,
        1,
        kernel_kwargs={"hidden_channels": 8, "num_layers": 2, "omega_0": 100.0},
        mask_kwargs={"init_value": 0.075, "threshold": 0.1, "dynamic_cropping": True},
        causal=True,
    )
    layer(torch.randn(1, 1, 784))
    assert int(layer.grid_size[0]) == 784
    assert layer.sample_kernel().shape == (1, 1, 65)


def test_cropping_keeps_5x5_of_33x33():
    layer = FlexConv(
        2,
        3,
        2,
        kernel_size=33,
        kernel_kwargs={"hidden_channels": 8, "num_layers": 2, "omega_0": 10.0},
        mask_kwargs={"init_value": 0.075, "threshold": 0.1},
    )
    assert layer.sample_kernel().shape == (3, 2, 5, 5)


def test_only_kept_positions_go_through_the_kernel_network():
    layer = SeparableFlexConv(
        1,
        1,
        1,
        kernel_kwargs={"hidden_channels": 4, "num_layers": 1, "omega_0": 5.0},
        mask_kwargs={"init_value": 0.075},
        causal=True,
    )
    seen = []
    layer.kernel_net.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    layer(torch.randn(1, 1, 784))
    assert seen == [65]


def test_mask_guard_keeps_small_sigma_finite():
    mask = GaussianMask(1, init_value=0.1)
    with torch.no_grad():
        mask.sigma.zero_()
    values = mask(torch.linspace(-1, 1, 11)[:, None])
    assert torch.isfinite(values).all()


def test_mask_parameters_are_tagged_for_their_own_learning_rate():
    layer = make_conv("SeparableFlexConv", 1)
    tagged = tagged_parameters(layer, MASK)
    assert [p is layer.mask.sigma for p in tagged] == [True]
    learned = FlexConv(
        2,
        2,
        2,
        kernel_size=9,
        kernel_kwargs={"omega_0": 5.0},
        mask_kwargs={"init_value": 0.2, "learn_mean": True},
    )
    assert len(tagged_parameters(copy.deepcopy(learned), MASK)) == 2


@pytest.mark.parametrize("conv_type", CONTINUOUS)
def test_state_dict_round_trip_is_bit_exact_and_keeps_grid_and_chang(conv_type):
    torch.manual_seed(0)
    a = make_conv(conv_type, 1)
    x = torch.randn(2, 3, 25)
    a(x)  # first forward fixes the grid and applies Chang init
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    torch.manual_seed(123)
    b = make_conv(conv_type, 1)
    b.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert int(b.grid_size[0]) == 25 and bool(b.chang_initialized)
    weight_before = b.kernel_net.output_linear.weight.clone()
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert torch.equal(b.kernel_net.output_linear.weight, weight_before), "Chang init re-applied"


def test_chang_init_is_applied_exactly_once():
    layer = make_conv("SeparableCKConv", 1)
    w0 = layer.kernel_net.output_linear.weight.clone()
    layer(torch.randn(1, 3, 16))
    w1 = layer.kernel_net.output_linear.weight.clone()
    torch.testing.assert_close(w1, w0 * (1 / 16) ** 0.5)
    layer(torch.randn(1, 3, 16))
    assert torch.equal(layer.kernel_net.output_linear.weight, w1)
    dense = make_conv("CKConv", 1)
    w0 = dense.kernel_net.output_linear.weight.clone()
    dense(torch.randn(1, 3, 16))
    torch.testing.assert_close(dense.kernel_net.output_linear.weight, w0 * (1 / (3 * 16)) ** 0.5)


@pytest.mark.parametrize("size,expected", [("same", 40), ("full", 79), (11, 11)])
def test_kernel_size_modes(size, expected):
    layer = SeparableCKConv(3, 3, 1, kernel_size=size, kernel_kwargs={"omega_0": 5.0})
    layer(torch.randn(1, 3, 40))
    assert layer.sample_kernel().shape[-1] == expected


def _smooth_signal(n: int, data_dim: int) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / n
    s = torch.sin(2 * torch.pi * t) + 0.5 * torch.cos(4 * torch.pi * t)
    if data_dim == 1:
        return s.reshape(1, 1, n)
    return (s[:, None] * s[None, :]).reshape(1, 1, n, n)


@pytest.mark.parametrize("data_dim", [1, 2])
def test_resampled_kernel_matches_upsampled_low_resolution_output(data_dim):
    torch.manual_seed(0)
    # a smooth kernel that decays towards the grid edges (Gaussian mask, no cropping)
    layer = (
        FlexConv(
            1,
            1,
            data_dim,
            kernel_size=9,
            kernel_type="MAGNet",
            kernel_kwargs={"hidden_channels": 8, "num_layers": 2, "omega_0": 0.05},
            chang_initialize=False,
            mask_kwargs={"init_value": 0.35, "dynamic_cropping": False},
        )
        .double()
        .eval()
    )
    n = 48
    lo = _smooth_signal(n, data_dim)
    hi = _smooth_signal(2 * n, data_dim)
    with torch.no_grad():
        out_lo = layer(lo)
        with at_resolution(layer, 2.0):
            assert layer.sample_kernel().shape[-1] == 17
            out_hi = layer(hi)
        assert layer.sample_kernel().shape[-1] == 9  # restored
    sub = out_hi[..., ::2] if data_dim == 1 else out_hi[..., ::2, ::2]
    interior = (slice(None), slice(None)) + (slice(6, -6),) * data_dim
    err = (sub[interior] - out_lo[interior]).abs().max() / out_lo[interior].abs().max()
    assert err < 0.02, err
    # without rescaling the kernel the response would be ~2^d times larger
    assert set_resolution(layer, None) == 1


def test_eval_cache_reuses_kernel_until_something_changes():
    layer = make_conv("SeparableFlexConv", 1)
    calls = []
    layer.kernel_net.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 3, 20)
    layer(x)
    layer(x)
    assert len(calls) == 2  # training mode: never cached
    layer.eval()
    with torch.no_grad():
        first = layer(x)
        layer(x)
        assert len(calls) == 3
        layer.kernel_net.output_linear.weight.add_(0.1)  # in-place parameter change
        changed = layer(x)
        assert len(calls) == 4 and not torch.equal(first, changed)
        layer.set_resolution(2.0)
        layer(x)
        assert len(calls) == 5
        layer.double()(x.double())
        assert len(calls) == 6
    layer.train()
    layer(x.double())
    assert len(calls) == 7


@pytest.mark.parametrize(
    "build, x, match",
    [
        (lambda: make_conv("SeparableFlexConv", 1), torch.randn(2, 3, 4, 4), r"\(b, c, l\)"),
        (
            lambda: make_conv("SeparableFlexConv", 2),
            torch.randn(2, 5, 4, 4),
            "expects 3 input channels, got 5",
        ),
        (lambda: make_conv("Conv", 2), torch.randn(3, 4, 4), "4 dims"),
    ],
)
def test_bad_input_shapes_name_expected_and_received(build, x, match):
    with pytest.raises(ValueError, match=match):
        build()(x)


def test_invalid_constructions_raise_clear_errors():
    with pytest.raises(ValueError, match="causal=True is only defined for 1D"):
        make_conv("SeparableFlexConv", 2, causal=True)
    with pytest.raises(KeyError, match="Supported kernel types: .*MAGNet"):
        build_kernel_net("MAGNett", data_dim=1, out_channels=2)
    with pytest.raises(KeyError, match="Did you mean 'MAGNet'"):
        build_kernel_net("MAGNett", data_dim=1, out_channels=2)
    with pytest.raises(KeyError, match="Supported mask types: gaussian"):
        SeparableFlexConv(2, 2, 1, mask_type="sigmoid", kernel_kwargs={"omega_0": 1.0})
    with pytest.raises(KeyError, match="Supported conv types"):
        build_conv("FlexiConv", 1, 1, 1)
    with pytest.raises(ValueError, match="odd kernel sizes"):
        Conv(2, 2, 2, kernel_size=4)
    with pytest.raises(ValueError, match="Unknown option"):
        build_kernel_net("MAGNet", data_dim=1, out_channels=2, hiden_channels=3)
    # a mask or conv option typo names the type and its options (not a raw TypeError)
    with pytest.raises(ValueError, match=r"\['init_valu'\] for mask type 'gaussian'; its options"):
        SeparableFlexConv(2, 2, 1, mask_kwargs={"init_valu": 0.3})
    with pytest.raises(ValueError, match=r"\['kernel_type'\] for conv type 'Conv'"):
        build_conv("Conv", 2, 2, 1, kernel_size=3, kernel_type="MAGNet")
    with pytest.raises(ValueError, match=r"\['horizon'\] for conv type 'SRF'"):
        build_conv("SRF", 2, 2, 2, horizon=3)
    # each type takes only its own options; init-specific ones are checked too
    with pytest.raises(ValueError, match=r"\['omega_0'\] for kernel type 'MLP'; its options"):
        build_kernel_net("MLP", data_dim=1, out_channels=2, omega_0=3.0)
    with pytest.raises(ValueError, match="init='ccnn' .* does not use input_scale"):
        build_kernel_net("MAGNet", data_dim=1, out_channels=2, input_scale=3.0)
    with pytest.raises(ValueError, match="init='flexconv' .* does not use omega_0"):
        build_kernel_net("MAGNet", data_dim=1, out_channels=2, init="flexconv", omega_0=3.0)
    Conv(2, 2, 1, kernel_size=4, causal=True)  # even causal kernels are fine


def test_magnet_initialisations_follow_their_flavour():
    torch.manual_seed(0)
    ccnn = build_kernel_net(
        "MAGNet", data_dim=1, out_channels=3, hidden_channels=16, num_layers=3, omega_0=50.0
    )
    flex = build_kernel_net(
        "MAGNet",
        data_dim=1,
        out_channels=3,
        hidden_channels=16,
        num_layers=3,
        input_scale=25.6,
        init="flexconv",
    )
    assert all(torch.equal(f.bias, torch.zeros_like(f.bias)) for f in ccnn.filter_linears)
    assert all(torch.equal(h.bias, torch.ones_like(h.bias)) for h in ccnn.hidden_linears)
    assert max(f.bias.abs().max() for f in flex.filter_linears) > 0.5  # phases ~ U(-pi, pi)
    # CCNN flavour (SPEC: W_l = default init x 2 pi omega_0 gamma_l in EVERY filter layer):
    # W_l / (2 pi omega_0 gamma_l) is the default Linear init, U(-1/sqrt(d), 1/sqrt(d)) —
    # filling that range (a missing 2 pi, gamma or later-layer omega_0 would not)
    for d in (1, 2):
        torch.manual_seed(d)
        net = build_kernel_net(
            "MAGNet", data_dim=d, out_channels=3, hidden_channels=256, num_layers=3, omega_0=50.0
        )
        assert len(net.filter_linears) == 4
        for linear, gamma in zip(net.filter_linears, net.gammas):
            base = linear.weight.detach() / (2 * math.pi * 50.0 * gamma.detach())
            assert base.abs().max() <= 1 / math.sqrt(d) + 1e-6
            assert base.abs().max() > 0.95 / math.sqrt(d)
            assert base.abs().mean() == pytest.approx(0.5 / math.sqrt(d), rel=0.1)
    causal = build_kernel_net(
        "MAGNet", data_dim=1, out_channels=1, omega_0=5.0, causal=True, init_spatial_value=0.125
    )
    assert all(((m > 0.875 - 1e-6) & (m <= 1.0)).all() for m in causal.mus)


@pytest.mark.parametrize("kernel_type", ["MAGNet", "Gabor"])
@pytest.mark.parametrize("data_dim", [2, 3])
def test_gabor_envelope_fast_path_equals_reference(kernel_type, data_dim):
    torch.manual_seed(0)
    scale = {"omega_0": 20.0} if kernel_type == "MAGNet" else {"input_scale": 20.0}
    net = build_kernel_net(kernel_type, data_dim=data_dim, out_channels=3, **scale).double()
    x = torch.rand(200, data_dim, dtype=torch.float64) * 2 - 1
    for l in range(len(net.filter_linears)):
        torch.testing.assert_close(
            net.envelope(l, x), net.envelope_reference(l, x), rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize("name", CONVS.names())
@pytest.mark.parametrize("data_dim", [1, 2, 3])
def test_every_conv_works_with_its_defaults_and_survives_copies(name, data_dim):
    """Built from (in, out, data_dim) alone; after a training forward/backward (which keeps
    ``last_kernel`` in the graph) ``copy.deepcopy``, ``pickle`` and an EMA/SWA average work,
    and the copies compute exactly what the layer computes."""
    import copy
    import inspect
    import pickle

    from torch.optim.swa_utils import AveragedModel

    params = inspect.signature(CONVS.get(name)).parameters.values()
    assert not any(p.kind == p.VAR_KEYWORD for p in params)  # help() shows every argument
    torch.manual_seed(0)
    layer = CONVS.build(name, 4, 3, data_dim=data_dim)
    x = torch.randn(2, 4, *([9] * data_dim))
    y = layer(x)
    assert y.shape == (2, 3, *([9] * data_dim))
    y.square().mean().backward()
    twin, thawed = copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))
    average = AveragedModel(layer)
    for m in (layer, twin, thawed, average):
        m.eval()
    with torch.no_grad():
        want = layer(x)
        assert torch.equal(twin(x), want) and torch.equal(thawed(x), want)
        assert torch.allclose(average(x), want)
