"""FlexNet / FlexTCN (FlexConv paper) and the CIFAR ResNets: structure, counts, causality."""

from __future__ import annotations

import pytest
import torch

from ccnn.models.blocks import ResNetBlock, TCNBlock
from ccnn.models.cifar_resnet import CIFARResNet
from ccnn.models.flexnet import FlexNet, FlexTCN, flexnet_7, flexnet_7_conv_kwargs
from ccnn.models.registry import MODELS, create_model
from ccnn.nn import FlexConv


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_flexnet_7_has_published_parameter_count():
    model = flexnet_7()
    assert n_params(model) == 671_650
    assert n_params(model.stem) == 6_468
    assert [b.conv2.out_channels for b in model.blocks] == [24, 24, 36, 36, 36, 48, 48]
    assert all(isinstance(b, ResNetBlock) for b in model.blocks)
    # 1x1 shortcuts with bias exactly where the width changes
    shortcuts = [n_params(b.shortcut) for b in model.blocks]
    assert shortcuts == [0, 0, 24 * 36 + 36, 0, 0, 36 * 48 + 48, 0]
    # the mask learns mean and sigma: 4 parameters per 2D FlexConv
    assert n_params(model.stem.mask) == 4


def test_flexnet_7_from_registry_and_explicit_options_agree():
    explicit = create_model(
        "flexnet",
        in_channels=3,
        out_channels=10,
        data_dim=2,
        hidden_channels=24,
        num_blocks=7,
        block_width_factors=[1.0, 2, 1.5, 3, 2.0, 2],
        conv_type="FlexConv",
        conv_kwargs=flexnet_7_conv_kwargs(33),
        dropout=0.2,
    )
    assert n_params(explicit) == n_params(create_model("flexnet_7")) == 671_650


def test_flexnet_forward_no_pooling_and_resolution_agnostic_head():
    model = flexnet_7(conv_kwargs={"kernel_size": 9}).eval()
    for side in (16, 20):
        x = torch.randn(2, 3, side, side)
        assert model(x).shape == (2, 10)
        assert model.features(x).shape == (2, 48, side, side)  # no pooling, no stride


@pytest.mark.parametrize(
    "conv_type, conv_kwargs",
    [
        ("Conv", {"kernel_size": 3}),
        ("SRF", {"order": 2}),
        (
            "CKConv",
            {
                "kernel_size": 7,
                "kernel_kwargs": {"hidden_channels": 8, "num_layers": 1, "init": "flexconv"},
            },
        ),
    ],
)
def test_flexnet_builds_with_other_convs(conv_type, conv_kwargs):
    import ccnn.nn.srf  # noqa: F401  (registers SRF)

    model = FlexNet(
        3,
        5,
        2,
        hidden_channels=4,
        num_blocks=2,
        block_width_factors=[1.0, 1, 2.0, 1],
        conv_type=conv_type,
        conv_kwargs=conv_kwargs,
        dropout=0.1,
    )
    out = model(torch.randn(2, 3, 12, 12))
    assert out.shape == (2, 5)
    out.sum().backward()


def _small_tcn(**kwargs) -> FlexTCN:
    conv_kwargs = {
        "kernel_type": "MAGNet",
        "kernel_size": "same",
        "kernel_kwargs": {"hidden_channels": 8, "num_layers": 2, "init": "flexconv"},
        "mask_type": "gaussian",
        "mask_kwargs": {"init_value": 0.3, "threshold": 0.1, "dynamic_cropping": True},
    }
    return FlexTCN(
        2,
        3,
        1,
        hidden_channels=6,
        num_blocks=2,
        conv_type="FlexConv",
        conv_kwargs=conv_kwargs,
        **kwargs,
    )


def test_flextcn_is_causal():
    model = _small_tcn().eval()  # eval: BatchNorm in train mode pools statistics over time
    assert all(isinstance(b, TCNBlock) for b in model.blocks)
    assert all(m.causal for m in model.modules() if isinstance(m, FlexConv))
    x = torch.randn(2, 2, 40)
    y = x.clone()
    y[..., 25:] = torch.randn(2, 2, 15) * 5  # change the future only
    with torch.no_grad():
        fx, fy = model.features(x), model.features(y)
    torch.testing.assert_close(fx[..., :25], fy[..., :25])
    assert not torch.allclose(fx[..., 25:], fy[..., 25:])


def test_flextcn_head_reads_the_last_step():
    model = _small_tcn().eval()
    x = torch.randn(2, 2, 40)
    with torch.no_grad():
        expected = model.out_linear(model.features(x)[..., -1])
        torch.testing.assert_close(model(x), expected)
        y = x.clone()
        y[..., -1] += 3.0  # the last input step reaches the output
        assert not torch.allclose(model(x), model(y))


def test_flextcn_rejects_noncausal_and_images():
    with pytest.raises(ValueError, match="causal"):
        FlexTCN(1, 2, 1, 4, 1, conv_type="Conv", conv_kwargs={"kernel_size": 3, "causal": False})
    with pytest.raises(ValueError, match="data_dim"):
        FlexTCN(1, 2, 2, 4, 1, conv_type="Conv", conv_kwargs={"kernel_size": 3})
    assert isinstance(
        create_model(
            "flextcn",
            in_channels=1,
            out_channels=2,
            hidden_channels=4,
            num_blocks=1,
            conv_type="Conv",
            conv_kwargs={"kernel_size": 3},
        ),
        FlexTCN,
    )


# The paper/akamaster CIFAR ResNets (option A) and the projection-shortcut variant (option B).
CIFAR_COUNTS = {
    20: (269_722, 272_474),
    32: (464_154, 466_906),
    44: (658_586, 661_338),
    56: (853_018, 855_770),
    110: (1_727_962, 1_730_714),
}


@pytest.mark.parametrize("depth", sorted(CIFAR_COUNTS))
def test_cifar_resnet_parameter_counts(depth):
    option_a, option_b = CIFAR_COUNTS[depth]
    assert n_params(CIFARResNet(depth)) == option_a
    assert n_params(CIFARResNet(depth, shortcut="B")) == option_b
    assert n_params(create_model(f"CIFARResNet{depth}", num_classes=10, in_channels=3)) == option_a


def test_cifar_resnet_registry_and_shapes():
    assert {f"CIFARResNet{d}" for d in (20, 32, 44, 56, 110, 1202)} <= set(MODELS.names())
    model = create_model("CIFARResNet20", out_channels=7, in_channels=1).eval()
    for side in (16, 32):
        assert model(torch.randn(2, 1, side, side)).shape == (2, 7)
    with pytest.raises(ValueError, match="6n"):
        CIFARResNet(21)
    with pytest.raises(ValueError, match="shortcut"):
        CIFARResNet(20, shortcut="C")


def test_cifar_resnet_option_a_shortcut_is_parameter_free_subsample_and_pad():
    block = CIFARResNet(20).blocks[3]  # first block of stage 2: 16 -> 32, stride 2
    x = torch.randn(1, 16, 8, 8)
    out = block.shortcut(x)
    assert out.shape == (1, 32, 4, 4)
    torch.testing.assert_close(out[:, 8:24], x[:, :, ::2, ::2])
    assert out[:, :8].abs().sum() == 0 and out[:, 24:].abs().sum() == 0
