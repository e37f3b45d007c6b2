"""Point convolutions and the point-cloud CCNN: brute-force reference, kNN, invariances,
Chang init, mask tags, bottleneck, residual, and the published parameter counts."""

from __future__ import annotations

import math

import pytest
import torch

from ccnn.models import pointcloud
from ccnn.models.pointcloud import PointCCNN
from ccnn.nn.params import MASK, parameter_groups
from ccnn.nn.pointconv import (
    POINT_CONVS,
    build_neighbourhood,
    build_point_conv,
    knn,
    knn_reference,
    point_convs,
)

KERNEL = {"hidden_channels": 8, "num_layers": 3, "omega_0": 2.0}


def make_conv(conv_type: str, c_in=3, c_out=4, k=5, **kwargs):
    kwargs.setdefault("mask_kwargs", {"init_value": 0.8})
    return build_point_conv(
        conv_type, c_in, c_out, 3, num_neighbours=k, kernel_kwargs=KERNEL, **kwargs
    )


def brute_force(conv, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Explicit loops over clouds, points and neighbours. x (b, c, n), pos (b, 3, n)."""
    b, c, n = x.shape
    k = min(conv.num_neighbours, n)
    out = torch.zeros(b, conv.out_channels, n, dtype=x.dtype)
    sigma2 = conv.mask.sigma.pow(2) + 1e-8
    for bi in range(b):
        p = pos[bi].T  # (n, 3)
        for i in range(n):
            dist = [((p[i] - p[j]) ** 2).sum().item() for j in range(n)]
            order = sorted(range(n), key=lambda j: (j != i, dist[j]))[:k]
            acc = torch.zeros(conv.out_channels if not conv.separable else c, dtype=x.dtype)
            for j in order:
                r = p[i] - p[j]
                inp = r.norm().reshape(1, 1) if conv.distance else r.reshape(1, 3)
                kv = conv.kernel_net(inp)[0]
                m = torch.exp(-0.5 * (r**2).sum() / sigma2)
                if conv.separable:
                    acc = acc + x[bi, :, j] * kv * m
                else:
                    acc = acc + (kv.reshape(conv.out_channels, c) * m) @ x[bi, :, j]
            if conv.bias is not None:
                acc = acc + conv.bias
            out[bi, :, i] = conv.channel_mixer(acc) if conv.separable else acc
    return out


@pytest.mark.parametrize("conv_type", POINT_CONVS.names())
def test_layer_equals_brute_force_reference(conv_type):
    torch.manual_seed(0)
    conv = make_conv(conv_type).double()
    x, pos = torch.randn(2, 3, 11, dtype=torch.float64), torch.rand(2, 3, 11, dtype=torch.float64)
    with torch.no_grad():
        conv.bias.normal_()
    out = conv(x, pos)  # applies Chang init first
    assert out.shape == (2, 4, 11)
    with torch.no_grad():
        ref = brute_force(conv, x, pos)
    torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)


def test_layer_backward_matches_reference():
    conv = make_conv("SeparablePointFlexConv").double()
    x = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    pos = torch.rand(1, 3, 8, dtype=torch.float64)
    conv(x, pos)  # Chang init
    g1 = torch.autograd.grad(conv(x, pos).pow(2).sum(), [x, conv.mask.sigma])
    g2 = torch.autograd.grad(brute_force(conv, x, pos).pow(2).sum(), [x, conv.mask.sigma])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("n,k,chunk", [(20, 1, None), (64, 16, None), (64, 16, 7), (33, 33, 10)])
def test_knn_matches_reference_and_puts_each_point_first(n, k, chunk):
    pos = torch.rand(3, n, 3, dtype=torch.float64)
    idx = knn(pos, k, chunk_size=chunk)
    assert torch.equal(idx, knn_reference(pos, k))
    assert torch.equal(idx[..., 0], torch.arange(n).expand(3, n))


def test_knn_self_first_with_duplicate_points():
    pos = torch.zeros(1, 6, 3)  # all points coincide
    assert torch.equal(knn(pos, 3)[..., 0], torch.arange(6)[None])


def test_neighbourhood_slices_nearest_first():
    pos = torch.rand(2, 3, 30)
    nb = build_neighbourhood(pos, 12)
    d = nb.sq_distances(12)
    assert (d[..., 1:] >= d[..., :-1]).all() and (d[..., 0] == 0).all()
    idx5, off5 = nb.first(5)
    assert torch.equal(idx5, knn(pos.transpose(1, 2), 5))
    assert off5.shape == (2, 30, 5, 3)
    assert build_neighbourhood(pos, 100).num_neighbours == 30  # clamped to n


def small_net(conv_type="SeparablePointFlexConv", **kwargs) -> PointCCNN:
    conv_kwargs = {
        "num_neighbours": 6,
        "kernel_kwargs": KERNEL,
        "mask_kwargs": {"init_value": 0.5},
    }
    return PointCCNN(6, 5, 8, 2, conv_type=conv_type, conv_kwargs=conv_kwargs, **kwargs)


def test_permuting_points_permutes_features_and_keeps_prediction():
    net = small_net().double().eval()
    x = torch.randn(2, 6, 24, dtype=torch.float64)
    perm = torch.randperm(24)
    with torch.no_grad():
        f, fp = net.features(x), net.features(x[..., perm])
        torch.testing.assert_close(fp, f[..., perm])
        torch.testing.assert_close(net(x[..., perm]), net(x))


@pytest.mark.parametrize("conv_type", POINT_CONVS.names())
def test_translation_leaves_layer_output_unchanged(conv_type):
    conv = make_conv(conv_type).double()
    x, pos = torch.randn(2, 3, 16, dtype=torch.float64), torch.rand(2, 3, 16, dtype=torch.float64)
    shift = torch.tensor([3.0, -2.0, 0.5], dtype=torch.float64)[None, :, None]
    torch.testing.assert_close(conv(x, pos + shift), conv(x, pos))


def random_rotation(seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def test_rotation_leaves_dist_variant_unchanged_but_not_the_offset_variant():
    rot = random_rotation()
    x, pos = torch.randn(2, 3, 16, dtype=torch.float64), torch.rand(2, 3, 16, dtype=torch.float64)
    rotated = torch.einsum("ij,bjn->bin", rot, pos)
    dist = make_conv("SeparablePointFlexConvDist").double()
    torch.testing.assert_close(dist(x, rotated), dist(x, pos))
    offsets = make_conv("SeparablePointFlexConv").double()
    assert not torch.allclose(offsets(x, rotated), offsets(x, pos))


def test_chang_init_applied_once_and_not_after_loading():
    torch.manual_seed(0)
    a = make_conv("SeparablePointFlexConv", k=4)
    w0 = a.kernel_net.output_linear.weight.detach().clone()
    x, pos = torch.randn(1, 3, 10), torch.rand(1, 3, 10)
    out = a(x, pos)
    torch.testing.assert_close(a.kernel_net.output_linear.weight, w0 * math.sqrt(1 / 4))
    a(x, pos)
    torch.testing.assert_close(a.kernel_net.output_linear.weight, w0 * math.sqrt(1 / 4))
    assert "chang_initialized" in a.state_dict() and bool(a.state_dict()["chang_initialized"])
    torch.manual_seed(1)
    b = make_conv("SeparablePointFlexConv", k=4)
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x, pos), out)
    dense = make_conv("PointFlexConv", k=4)
    wd = dense.kernel_net.output_linear.weight.detach().clone()
    dense(x, pos)
    torch.testing.assert_close(dense.kernel_net.output_linear.weight, wd * math.sqrt(1 / 12))


def test_mask_sigma_is_one_tagged_parameter_per_conv():
    net = small_net()
    groups = parameter_groups(net)
    assert len(groups[MASK]) == len(point_convs(net)) == 3
    assert all(p.numel() == 1 for p in groups[MASK])


def test_mask_learn_mean_and_unknown_types_are_rejected():
    with pytest.raises(ValueError, match="learn_mean"):
        make_conv("SeparablePointFlexConv", mask_kwargs={"init_value": 0.1, "learn_mean": True})
    with pytest.raises(ValueError, match="gaussian"):
        make_conv("SeparablePointFlexConv", mask_type="sigmoid")
    with pytest.raises(KeyError, match="SeparablePointFlexConv"):
        build_point_conv("SeparablePointFlexConvv", 3, 4)


def test_bottleneck_reduces_aggregated_channels_only_above_32():
    wide = make_conv("SeparablePointFlexConv", c_in=64, c_out=16, bottleneck_factor=4)
    assert wide.agg_channels == 16 and wide.bottleneck.weight.shape == (16, 64)
    assert wide.kernel_net.output_linear.out_features == 16
    assert wide.channel_mixer.weight.shape == (16, 16)
    assert wide(torch.randn(2, 64, 12), torch.rand(2, 3, 12)).shape == (2, 16, 12)
    narrow = make_conv("SeparablePointFlexConv", c_in=6, c_out=16, bottleneck_factor=4)
    assert narrow.bottleneck is None and narrow.agg_channels == 6


def test_neighbourhood_is_computed_once_per_forward(monkeypatch):
    calls = []
    real = pointcloud.build_neighbourhood

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pointcloud, "build_neighbourhood", counting)
    net = small_net()
    net(torch.randn(2, 6, 16))
    assert len(calls) == 1


def test_residual_is_x_plus_f_x():
    """Block output = x + f(x) with f the block's own branch computed here from its parts (the
    published code returned 2 f(x); returning only x or only f(x) fails too)."""
    torch.manual_seed(0)
    net = small_net().double().eval()
    block = net.blocks[0]
    h = torch.randn(2, 8, 16, dtype=torch.float64)
    nb = build_neighbourhood(torch.rand(2, 3, 16, dtype=torch.float64), 6)
    with torch.no_grad():
        inner = block.norm(h) if block.prenorm else h
        f = block.act2(block.linear(block.act1(block.conv(inner, nb))))
        want = h + f if block.prenorm else block.norm(h + f)
        got = block(h, nb)
    assert f.abs().mean() > 0.05 * h.abs().mean()  # the branch matters
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_network_trains_one_step_and_handles_fewer_points_than_k():
    net = small_net()
    x = torch.randn(4, 6, 5)  # 5 points < 6 neighbours
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def magnet_body(d: int, h: int, layers: int = 3) -> int:
    return (layers + 1) * (3 * h * d + h) + layers * (h * h + h)


def point_ccnn_count(hidden, blocks, kh, classes=40, in_ch=6, d=3) -> int:
    """Our derivation: separable point conv = MAGNet body + output (kh+1)*c_in + 1 sigma +
    c_in depthwise bias + mixer; S4 block = BN + conv + 1x1 linear; stem conv + BN; final BN;
    head."""

    def conv(ci, co):
        return magnet_body(d, kh) + (kh + 1) * ci + 1 + ci + ci * co + co

    bn = 2 * hidden
    block = bn + conv(hidden, hidden) + hidden * hidden + hidden
    return conv(in_ch, hidden) + bn + blocks * block + bn + (hidden + 1) * classes


def test_count_derivation_matches_published_counts():
    assert point_ccnn_count(16, 4, 8) == 6_545
    assert point_ccnn_count(32, 4, 8) == 14_401
    assert point_ccnn_count(48, 4, 8) == 26_353
    assert point_ccnn_count(140, 4, 32) == 207_709
    assert point_ccnn_count(380, 6, 64) == 2_017_503
    assert point_ccnn_count(380, 6, 64, d=1) == 2_006_751  # our Dist variant


@pytest.mark.parametrize(
    "hidden,blocks,kh,conv_type,expected",
    [
        (16, 4, 8, "SeparablePointFlexConv", 6_545),
        (140, 4, 32, "SeparablePointFlexConv", 207_709),
        (380, 6, 64, "SeparablePointFlexConvDist", 2_006_751),
    ],
)
def test_model_counts(hidden, blocks, kh, conv_type, expected):
    conv_kwargs = {
        "num_neighbours": 16,
        "kernel_kwargs": {"hidden_channels": kh, "num_layers": 3, "omega_0": 50.0},
        "mask_kwargs": {"init_value": 0.075},
    }
    net = PointCCNN(6, 40, hidden, blocks, conv_type=conv_type, conv_kwargs=conv_kwargs)
    assert sum(p.numel() for p in net.parameters()) == expected
