"""Series with unobserved steps: padding never changes a prediction; the kernel at the true time
differences (direct path) equals the grid path; BatchNorm statistics exclude unobserved steps."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from ccnn.models.ccnn import CCNN
from ccnn.nn.conv import build_conv
from ccnn.nn.masking import (
    gap_weights,
    last_observed,
    masked_batch_norm,
    masked_mean,
    missing_fraction,
    pad_series,
    to_grid,
)

KERNEL = {
    "kernel_type": "MAGNet",
    "kernel_kwargs": {"hidden_channels": 16, "num_layers": 2, "omega_0": 20.0},
}
MASK = {"mask_type": "gaussian", "mask_kwargs": {"init_value": 0.3}}
CONVS = {
    "SeparableFlexConv": {**KERNEL, **MASK},
    "FlexConv": {**KERNEL, **MASK},
    "SeparableCKConv": KERNEL,
    "CKConv": KERNEL,
    "Conv": {"kernel_size": 5},
    "SeparableConv": {"kernel_size": 5},
}


def network(conv: str, causal: bool, use_fft, readout="mean", block="S4", norm="BatchNorm"):
    torch.manual_seed(0)
    kwargs = {**CONVS[conv], "causal": causal, "use_fft": use_fft}
    if conv in ("Conv", "SeparableConv") and causal:
        kwargs["kernel_size"] = 4
    net = CCNN(
        3,
        4,
        1,
        hidden_channels=8,
        num_blocks=2,
        conv_type=conv,
        conv_kwargs=kwargs,
        block_type=block,
        readout=readout,
        norm=norm,
    ).double()
    net(torch.randn(2, 3, 60, dtype=torch.double))  # size the "same" kernels: 60 steps
    return net


def padded_batches(lengths=(40, 25, 33), pads=(0, 10, 500), seed=1):
    """The same series, in batches padded by each of ``pads`` steps beyond the longest one."""
    g = torch.Generator().manual_seed(seed)
    series = [torch.randn(3, n, generator=g, dtype=torch.double) for n in lengths]
    out = []
    for pad in pads:
        total = max(lengths) + pad
        x = torch.randn(len(series), 3, total, generator=g, dtype=torch.double)  # junk padding
        mask = torch.zeros(len(series), total, dtype=torch.double)
        for i, s in enumerate(series):
            x[i, :, : s.shape[1]] = s
            mask[i, : s.shape[1]] = 1
        out.append((x, mask))
    return out


SETTINGS = [
    (conv, causal, fft, readout)
    for conv in CONVS
    for causal in (False, True)
    for fft in (None, True, False)
    for readout in (("mean", "last") if causal else ("mean",))
]


@pytest.mark.parametrize("conv, causal, use_fft, readout", SETTINGS)
@pytest.mark.parametrize("training", [False, True])
def test_padding_never_changes_logits(conv, causal, use_fft, readout, training):
    net = network(conv, causal, use_fft, readout)
    net.train(training)
    logits = []
    for x, mask in padded_batches():
        if training:
            torch.manual_seed(3)
        logits.append(net(x, mask=mask))
    for other in logits[1:]:
        torch.testing.assert_close(other, logits[0], rtol=1e-6, atol=1e-9)
    # and a series alone, unpadded, gets the logits it gets in the padded batch (eval mode)
    if not training:
        x, mask = padded_batches()[2]
        alone = net(x[1:2, :, :25])
        torch.testing.assert_close(alone, logits[0][1:2], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("block", ["S4", "default", "PreActResNet", "TCN"])
@pytest.mark.parametrize("norm", ["BatchNorm", "LayerNorm"])
def test_padding_invariance_every_block_and_norm(block, norm):
    net = network("SeparableFlexConv", False, None, block=block, norm=norm)
    for training in (True, False):
        net.train(training)
        outs = [net(x, mask=m) for x, m in padded_batches()]
        for other in outs[1:]:
            torch.testing.assert_close(other, outs[0], rtol=1e-6, atol=1e-9)


def test_float32_padding_within_1e6():
    net = network("SeparableFlexConv", True, True, "last").float().eval()
    outs = [net(x.float(), mask=m.float()) for x, m in padded_batches()]
    for other in outs[1:]:
        torch.testing.assert_close(other, outs[0], rtol=1e-6, atol=1e-6)


def test_batchnorm_statistics_are_those_of_the_observed_steps():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 9, dtype=torch.double)
    mask = torch.tensor([[1.0] * 9, [1.0] * 5 + [0.0] * 4, [1.0] * 2 + [0.0] * 7]).double()
    bn = nn.BatchNorm1d(4).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    ref = nn.BatchNorm1d(4).double()
    ref.load_state_dict(bn.state_dict())
    out = masked_batch_norm(bn, x, mask)
    # independent: BatchNorm over the observed columns only, laid out as one long sequence
    observed = torch.cat([x[i, :, mask[i] > 0] for i in range(3)], dim=-1)[None]  # (1, 4, 16)
    expected = ref(observed)[0]
    got = torch.cat([out[i, :, mask[i] > 0] for i in range(3)], dim=-1)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == 1
    bn.eval(), ref.eval()
    torch.testing.assert_close(masked_batch_norm(bn, x, mask), ref(x))


def test_masked_batchnorm_equals_batchnorm_when_all_observed():
    x = torch.randn(5, 3, 7, dtype=torch.double)
    a, b = nn.BatchNorm1d(3, momentum=None).double(), nn.BatchNorm1d(3, momentum=None).double()
    for _ in range(2):
        torch.testing.assert_close(masked_batch_norm(a, x, torch.ones(5, 7).double()), b(x))
    torch.testing.assert_close(a.running_var, b.running_var)


def test_readouts():
    h = torch.arange(24.0).view(2, 3, 4)
    mask = torch.tensor([[1.0, 1, 0, 0], [1.0, 0, 1, 0]])
    assert masked_mean(h, mask).tolist() == [[0.5, 4.5, 8.5], [13.0, 17.0, 21.0]]
    assert last_observed(h, mask).tolist() == [[1.0, 5.0, 9.0], [14.0, 18.0, 22.0]]


def test_downsampling_with_a_mask_is_rejected():
    net = CCNN(
        3, 2, 1, hidden_channels=8, num_blocks=2, conv_kwargs={**KERNEL, **MASK}, downsampling=[0]
    )
    with pytest.raises(ValueError, match="net.downsampling"):
        net(torch.randn(2, 3, 20), mask=torch.ones(2, 20))


def test_groupnorm_with_a_mask_is_rejected():
    net = CCNN(
        3, 2, 1, hidden_channels=8, num_blocks=1, conv_kwargs={**KERNEL, **MASK}, norm="GroupNorm"
    )
    with pytest.raises(ValueError, match="GroupNorm"):
        net(torch.randn(2, 3, 20), mask=torch.ones(2, 20))


# ---------------------------------------------------------------------------------------------
# irregular sampling: the kernel at the true time differences


def irregular_batch(b=4, length=50, keep=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    times = torch.stack(
        [torch.sort(torch.randperm(length, generator=g)[:keep]).values for _ in range(b)]
    ).double()
    x = torch.randn(b, 3, keep, generator=g, dtype=torch.double)
    mask = torch.ones(b, keep, dtype=torch.double)
    mask[2, 20:] = 0  # a shorter series
    return x, times, mask


@pytest.mark.parametrize("conv", ["SeparableFlexConv", "FlexConv", "SeparableCKConv", "CKConv"])
@pytest.mark.parametrize("causal", [False, True])
def test_direct_path_equals_grid_path(conv, causal):
    net = network(conv, causal, None, "last" if causal else "mean")
    x, times, mask = irregular_batch()
    for training in (True, False):
        net.train(training)
        net.time_path = "grid"
        grid = net(x, mask=mask, times=times)
        net.time_path = "direct"
        direct = net(x, mask=mask, times=times)
        torch.testing.assert_close(direct, grid, rtol=1e-9, atol=1e-10)


def test_direct_path_equals_grid_path_on_a_finer_grid():
    torch.manual_seed(0)
    net = (
        CCNN(
            2,
            3,
            1,
            hidden_channels=8,
            num_blocks=1,
            conv_type="SeparableCKConv",
            conv_kwargs=KERNEL,
            time_resolution=2,
        )
        .double()
        .eval()
    )
    times = torch.tensor([[0.0, 0.5, 2.0, 3.5, 7.0], [1.0, 1.5, 2.5, 4.0, 9.0]]).double()
    x = torch.randn(2, 2, 5, dtype=torch.double)
    grid = net(x, times=times)
    net.time_path = "direct"
    torch.testing.assert_close(net(x, times=times), grid, rtol=1e-9, atol=1e-10)
    assert int(net.stem.grid_size[0]) == 9  # span of 8 time units, sized once


def test_direct_path_against_an_explicit_sum():
    """One FlexConv layer: out_i = sum_j K(pos(t_j - t_i)) x_j with K from the kernel network."""
    torch.manual_seed(0)
    conv = build_conv("SeparableFlexConv", 2, 2, 1, **KERNEL, **MASK).double()
    conv.init_time_grid(20.0)  # 21-point grid: offsets -10..10 map to positions -1..1
    times = torch.tensor([[0.0, 3.0, 4.0, 9.0, 17.0]]).double()
    x = torch.randn(1, 2, 5, dtype=torch.double)
    out = conv(x, times=times)
    axis = torch.linspace(-1, 1, 21, dtype=torch.double)
    keep = conv.mask.crop([axis])[0]
    lo, hi = axis[keep][0].item(), axis[keep][-1].item()
    expected = torch.zeros(1, 2, 5, dtype=torch.double)
    for i, j in itertools.product(range(5), range(5)):
        pos = (times[0, j] - times[0, i]).item() / 10.0
        if lo - 1e-9 <= pos <= hi + 1e-9:
            p = torch.tensor([[pos]], dtype=torch.double)
            k = conv.kernel_net(p)[0] * conv.mask(p)[0]
            expected[0, :, i] += k * x[0, :, j]
    expected = conv.channel_mixer(expected + conv.bias[:, None])
    torch.testing.assert_close(out, expected)


def test_timestamps_equal_the_masked_grid_of_the_dropped_series():
    """Dropping steps and giving the kept ones with their times = the grid with those steps
    masked out (what the data loader's two modes produce)."""
    net = network("SeparableFlexConv", False, None)
    net.eval()
    g = torch.Generator().manual_seed(0)
    full = torch.randn(2, 3, 50, generator=g, dtype=torch.double)
    keep = torch.rand(2, 50, generator=g) > 0.4
    grid_mask = keep.double()
    kept_times = [torch.nonzero(k)[:, 0].double() for k in keep]
    values, mask, times = pad_series(
        [full[i][:, keep[i]] for i in range(2)], times=kept_times, dtype=torch.double
    )
    torch.testing.assert_close(
        net(values, mask=mask, times=times), net(full, mask=grid_mask), rtol=1e-9, atol=1e-10
    )


def test_to_grid_places_and_rejects_collisions():
    values = torch.tensor([[[1.0, 2.0, 3.0]]])
    grid, mask, index = to_grid(values, torch.tensor([[5.0, 6.0, 8.0]]))
    assert grid.tolist() == [[[1.0, 2.0, 0.0, 3.0]]] and mask.tolist() == [[1, 1, 0, 1]]
    assert index.tolist() == [[0, 1, 3]]
    with pytest.raises(ValueError, match="same grid point"):
        to_grid(values, torch.tensor([[0.0, 0.2, 1.0]]))
    grid, mask, _ = to_grid(values, torch.tensor([[0.0, 0.5, 1.0]]), resolution=2)
    assert grid.tolist() == [[[1.0, 2.0, 3.0]]]


def test_pad_series_from_numpy():
    import numpy as np

    values, mask, times = pad_series([np.arange(3.0), np.array([1.0, np.nan, 2.0, 4.0])])
    assert values.shape == (2, 1, 4) and times is None
    assert mask.tolist() == [[1, 1, 1, 0], [1, 0, 1, 1]]
    assert values[1, 0].tolist() == [1.0, 0.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="times of series 0"):
        pad_series([np.arange(3.0)], times=[np.arange(2.0)])


def test_discrete_convolutions_reject_timestamps():
    conv = build_conv("Conv", 2, 2, 1, kernel_size=3)
    with pytest.raises(ValueError, match="to_grid"):
        conv(torch.randn(1, 2, 4), times=torch.arange(4.0)[None])


# ---------------------------------------------------------------------------------------------
# steps missing inside a series: quadrature weights and observation dropout


def _gap_weights_by_hand(times: list[float]) -> list[float]:
    """Half the gap to each observed neighbour (the whole gap at the ends; 1 alone)."""
    t = sorted(times)
    out = {}
    for k, v in enumerate(t):
        left = v - t[k - 1] if k > 0 else None
        right = t[k + 1] - v if k + 1 < len(t) else None
        if left is None and right is None:
            out[v] = 1.0
        elif left is None or right is None:
            out[v] = left if right is None else right
        else:
            out[v] = (left + right) / 2
    return [out[v] for v in times]


def test_gap_weights_match_a_by_hand_computation():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(6, 30, generator=g) > 0.4).double()
    mask[0] = 1  # fully observed
    mask[1, :12], mask[1, 12:] = 1, 0  # fully observed, then padding
    mask[2] = 0
    mask[2, 7] = 1  # a single observation
    w = gap_weights(mask)
    for row, m in zip(w, mask):
        steps = torch.nonzero(m)[:, 0].double().tolist()
        want = torch.zeros(30, dtype=torch.double)
        want[m > 0] = torch.tensor(_gap_weights_by_hand(steps), dtype=torch.double)
        assert torch.equal(row, want)
    assert torch.equal(w[0], torch.ones(30, dtype=torch.double))
    assert torch.equal(w[1], mask[1])
    # unordered times in any unit; a finer grid of step 1/r gives the same weights in time units
    times = torch.tensor([[3.0, 0.0, 7.5, 1.0, 99.0]], dtype=torch.double)
    valid = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]], dtype=torch.double)
    assert gap_weights(valid, times).tolist() == [[3.25, 1.0, 4.5, 1.5, 0.0]]
    assert torch.equal(gap_weights(valid, times * 4, step=0.25), gap_weights(valid, times))


def test_missing_fraction_counts_gaps_inside_spans_only():
    mask = torch.tensor([[1, 1, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1.0]])
    assert missing_fraction(mask).item() == pytest.approx(1 / 12)  # 11 of 5 + 7 steps
    assert missing_fraction(mask[1:]).item() == 0  # padding is not missing
    times = torch.tensor([[0, 2, 0, 4, 6, 0, 0], [0, 1, 2, 3, 4, 5, 6.0]])
    assert missing_fraction(mask, times).item() == pytest.approx(3 / 14)  # 11 of 7 + 7 units


@pytest.mark.parametrize("conv", ["SeparableFlexConv", "CKConv", "Conv"])
def test_weights_scale_each_step_of_a_convolution(conv):
    layer = build_conv(conv, 3, 4, 1, **CONVS[conv]).double()
    x = torch.randn(2, 3, 20, dtype=torch.double)
    mask = (torch.rand(2, 20) > 0.3).double()
    w = gap_weights(mask)
    torch.testing.assert_close(layer(x, mask=mask, weights=w), layer(x * w[:, None]))


def test_gap_weights_change_only_series_with_gaps():
    net = network("SeparableFlexConv", False, None).eval()
    x = torch.randn(3, 3, 50, dtype=torch.double)
    padded = torch.ones(3, 50, dtype=torch.double)
    padded[1, 30:] = 0
    gaps = padded.clone()
    gaps[0, 10:14] = 0
    plain = network("SeparableFlexConv", False, None).eval()
    plain.gap_weights = False
    torch.testing.assert_close(net(x, mask=padded), plain(x, mask=padded), rtol=0, atol=0)
    out, ref = net(x, mask=gaps), plain(x, mask=gaps)
    assert not torch.allclose(out[0], ref[0])
    torch.testing.assert_close(out[1:], ref[1:], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rate", [0.5, -1.0])
def test_observation_dropout_hides_observed_steps_in_training(rate):
    net = network("SeparableFlexConv", False, None)
    net.observation_dropout = rate
    ref = network("SeparableFlexConv", False, None)
    x = torch.randn(4, 3, 40, dtype=torch.double)
    mask = torch.ones(4, 40, dtype=torch.double)
    mask[0, 5:25] = 0  # 20 of 40 steps missing inside series 0
    mask[1, 2:] = 0  # two observations: hiding any would leave < 2, so all are kept
    p = rate if rate > 0 else 20 / (40 + 2 + 40 + 40)  # missing / steps inside the spans
    torch.manual_seed(3)
    hidden = mask * (torch.rand(4, 40) >= p)  # the draw the network makes (float32)
    hidden[1] = mask[1]
    torch.manual_seed(3)
    torch.testing.assert_close(net(x, mask=mask), ref(x, mask=hidden), rtol=0, atol=0)
    net.eval(), ref.eval()  # never in evaluation
    torch.testing.assert_close(net(x, mask=mask), ref(x, mask=mask), rtol=0, atol=0)


def test_observation_dropout_auto_leaves_fully_observed_series_alone():
    net = network("SeparableFlexConv", False, None)
    net.observation_dropout = -1.0
    ref = network("SeparableFlexConv", False, None)
    x = torch.randn(4, 3, 40, dtype=torch.double)
    torch.manual_seed(0)
    out = net(x)
    assert torch.equal(out, ref(x))
    padded = torch.ones(4, 40, dtype=torch.double)
    padded[2, 30:] = 0
    assert torch.equal(net(x, mask=padded), ref(x, mask=padded))


def test_observation_dropout_rejects_bad_values():
    with pytest.raises(ValueError, match=r"observation_dropout must be in \[0, 1\)"):
        CCNN(3, 2, 1, hidden_channels=4, num_blocks=1, observation_dropout=1.0)
    with pytest.raises(ValueError, match="1D series"):
        CCNN(3, 2, 2, hidden_channels=4, num_blocks=1, observation_dropout=0.2)
