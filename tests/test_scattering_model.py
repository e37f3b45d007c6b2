"""ScatteringNet channel / parameter counts of the seed's experiments A–I (no big allocations)."""

from __future__ import annotations

import warnings

import pytest
import torch

from ccnn.models.scattering_net import ScatteringNet, describe_scattering_net

# id: (n_blocks, L, modulus, mixing_horizon, final channels, final side,
#      linear params without GAP, linear params with GAP)
EXPERIMENTS = {
    "A": (5, 4, "complex_modulus", None, 1875, 7, 92e6, 1.9e6),
    "B": (5, 4, "complex_modulus", 27, 1875, 7, 92e6, 1.9e6),
    "C": (4, 4, "complex_modulus", None, 375, 14, 73.5e6, 375e3),
    "D": (5, 8, "complex_modulus", 27, 19683, 7, 964e6, 19.7e6),
    "E": (4, 8, "complex_modulus", 27, 2187, 14, 429e6, 2.2e6),
    "F": (4, 4, "phase_relu", None, 375, 14, 73.5e6, 375e3),
    "G": (5, 8, "phase_relu", 27, 19683, 7, 964e6, 19.7e6),
    "H": (4, 4, "complex_modulus", None, 375, 14, 73.5e6, 375e3),
    "I": (4, 4, "complex_modulus", None, 375, 14, 73.5e6, 375e3),
}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / b


@pytest.mark.parametrize("exp", sorted(EXPERIMENTS))
@pytest.mark.parametrize("gap", [False, True])
def test_experiment_counts_at_224(exp, gap):
    n, L, mod, h, c_out, side, lin, lin_gap = EXPERIMENTS[exp]
    kw = dict(
        n_blocks=n, L=L, modulus_type=mod, lowpass_last=True, mixing_horizon=h, global_avg_pool=gap
    )
    spec = describe_scattering_net(1000, 3, 224, **kw)
    assert spec.channels[-1] == c_out == 3 * (1 + L) ** (n - 1)
    assert spec.spatial == (side, side)
    expected_linear = (c_out if gap else c_out * side * side) * 1000 + 1000
    assert spec.n_params_linear == expected_linear
    # the plan's table, rounded to 2-3 digits
    assert _rel(spec.n_params_linear, lin_gap if gap else lin) < 0.02
    # the module built on the meta device (no memory) has exactly the analytic counts
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            model = ScatteringNet(1000, 3, 224, **kw)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.extractor) == spec.n_params_extractor
    assert count(model.head) == spec.n_params_classifier == spec.n_params_linear + 2 * c_out
    assert count(model) == spec.n_params_total
    assert model.head.fc.in_features == spec.head_features


def test_classifier_example_from_spec():
    spec = describe_scattering_net(1000, 3, 224, n_blocks=4, L=4, lowpass_last=True)
    assert spec.n_params_linear == 375 * 14 * 14 * 1000 + 1000 == 73_501_000
    assert spec.channels == [3, 15, 75, 375, 375]


def test_extractor_counts_by_hand():
    # 2 blocks, L=2, K=3, no lowpass-last, full mixing, phase_relu
    spec = describe_scattering_net(
        10, 3, 32, n_blocks=2, L=2, kernel_size=3, modulus_type="phase_relu", lowpass_last=False
    )
    b1 = 3 * 5 * 3 * 9 + 4 + 4 * 6  # (φ + 2L ψ) × C_in × K², pool, phase weights
    b2 = 9 * 5 * 9 * 9 + 4 + 4 * 18
    assert spec.n_params_extractor == b1 + b2
    assert spec.channels == [3, 9, 27] and spec.spatial == (8, 8)


def test_mixing_horizon_warning_at_model_level():
    with pytest.warns(UserWarning, match="actual mixing horizon 75"):
        with torch.device("meta"):
            ScatteringNet(1000, 3, 224, n_blocks=4, L=4, lowpass_last=True, mixing_horizon=27)


@pytest.mark.parametrize("mod", ["complex_modulus", "phase_relu"])
@pytest.mark.parametrize("gap", [False, True])
def test_small_forward_backward(mod, gap):
    torch.manual_seed(0)
    model = ScatteringNet(
        7,
        3,
        32,
        n_blocks=3,
        L=2,
        kernel_size=5,
        modulus_type=mod,
        lowpass_last=True,
        global_avg_pool=gap,
    )
    x = torch.randn(4, 3, 32, 32)
    feats = model.extractor(x)
    assert feats.shape == (4, 27, 4, 4)
    out = model(x)
    assert out.shape == (4, 7)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_too_small_input_raises():
    with pytest.raises(ValueError, match="too small"):
        ScatteringNet(10, 3, 8, n_blocks=4)
