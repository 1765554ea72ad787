"""Building blocks against hand computations, the papers' formulas, fvcore and PyTorch's own convolution."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layers import (
    Conv2dSame,
    ConvBNAct,
    DepthwiseSeparableConv,
    InvertedResidual,
    depthwise_conv2d,
    depthwise_separable_conv_macs,
    depthwise_separable_reduction,
    make_divisible,
    standard_conv_macs,
)
from mobilenet.flops import count_macs


@pytest.mark.parametrize(
    "value, expected",
    [
        (32 * 1.0, 32),
        (32 * 0.35, 16),  # 11.2 rounds to 8, which is more than 10% below: one multiple up
        (16 * 0.35, 8),  # 5.6 -> the minimum, 8
        (24 * 0.75, 24),  # 18 -> 16 is 11% below 18: 24
        (96 * 0.35, 32),  # 33.6 -> 32 (4.8% below)
        (160 * 0.35, 56),
        (1280 * 1.4, 1792),
        (44, 48),  # 44 + 4 = 48: halves round up
        (43.9, 40),
    ],
)
def test_make_divisible_hand_values(value, expected):
    assert make_divisible(value) == expected


def test_make_divisible_never_more_than_10_percent_below():
    for tenth in range(1, 20000):
        value = tenth / 10
        result = make_divisible(value)
        assert result % 8 == 0 and result >= 8
        assert result >= 0.9 * value
        assert abs(result - value) <= 8  # nearest multiple, or one above it


def test_conv_bn_act_structure_and_linear_variant():
    block = ConvBNAct(8, 16, 3, stride=2, groups=1, activation=nn.ReLU)
    assert block.conv.bias is None and block.conv.padding == (1, 1) and block.conv.stride == (2, 2)
    assert isinstance(block.bn, nn.BatchNorm2d) and isinstance(block.act, nn.ReLU)
    linear = ConvBNAct(8, 16, 1, activation=None).eval()
    x = torch.randn(2, 8, 5, 5)
    expected = linear.bn(F.conv2d(x, linear.conv.weight))
    torch.testing.assert_close(linear(x), expected)
    assert (linear(x) < 0).any()  # no activation
    with pytest.raises(ValueError, match="padding"):
        ConvBNAct(8, 16, 3, padding="valid")


def test_depthwise_separable_block():
    block = DepthwiseSeparableConv(16, 32, stride=2, activation=nn.ReLU).eval()
    assert block.conv_dw.conv.groups == 16 and block.conv_dw.conv.stride == (2, 2)
    assert block.conv_pw.conv.kernel_size == (1, 1) and block.conv_pw.conv.out_channels == 32
    x = torch.randn(2, 16, 10, 10)
    y = F.relu(block.conv_dw.bn(F.conv2d(x, block.conv_dw.conv.weight, stride=2, padding=1, groups=16)))
    y = F.relu(block.conv_pw.bn(F.conv2d(y, block.conv_pw.conv.weight)))
    torch.testing.assert_close(block(x), y)


@pytest.mark.parametrize(
    "in_ch, out_ch, stride, t, residual",
    [(16, 16, 1, 6, True), (16, 24, 1, 6, False), (16, 16, 2, 6, False), (32, 16, 1, 1, False), (16, 16, 1, 1, True)],
)
def test_inverted_residual_structure(in_ch, out_ch, stride, t, residual):
    block = InvertedResidual(in_ch, out_ch, stride, t).eval()
    assert block.use_residual is residual
    if t == 1:
        assert isinstance(block.conv_pw, nn.Identity)
    else:
        assert block.conv_pw.conv.out_channels == in_ch * t and isinstance(block.conv_pw.act, nn.ReLU6)
    assert block.conv_dw.conv.groups == in_ch * t
    assert isinstance(block.conv_pwl.act, nn.Identity)  # linear bottleneck
    x = torch.randn(2, in_ch, 8, 8)
    h = x if t == 1 else F.relu6(block.conv_pw.bn(F.conv2d(x, block.conv_pw.conv.weight)))
    h = F.relu6(block.conv_dw.bn(F.conv2d(h, block.conv_dw.conv.weight, stride=stride, padding=1, groups=in_ch * t)))
    h = block.conv_pwl.bn(F.conv2d(h, block.conv_pwl.conv.weight))
    torch.testing.assert_close(block(x), h + x if residual else h)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel, padding", [(3, 1), (3, 0), (5, 2)])
def test_depthwise_conv2d_equals_grouped_conv(stride, kernel, padding):
    x = torch.randn(2, 6, 13, 12, dtype=torch.float64)
    weight = torch.randn(6, 1, kernel, kernel, dtype=torch.float64)
    expected = F.conv2d(x, weight, stride=stride, padding=padding, groups=6)
    torch.testing.assert_close(depthwise_conv2d(x, weight, stride=stride, padding=padding), expected)


def test_depthwise_conv2d_rejects_wrong_weight():
    with pytest.raises(ValueError, match="weight"):
        depthwise_conv2d(torch.randn(1, 4, 5, 5), torch.randn(4, 2, 3, 3))


@pytest.mark.parametrize("height, width", [(224, 224), (113, 113), (7, 8), (8, 7)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv2d_same_matches_tensorflow_rule(height, width, stride, groups, channels_last):
    """Against the hand rule (pad a copy, the odd pixel right/bottom), in value and gradient: the layer itself
    pads nothing (a zero-fronted kernel with symmetric padding, `layers.padding.symmetric_form`)."""
    conv = Conv2dSame(4, 4, 3, stride, groups=groups, bias=True).double()
    x = torch.randn(2, 4, height, width, dtype=torch.float64, requires_grad=True)
    x_in = x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def pads(size: int) -> tuple[int, int]:
        total = max((-(-size // stride) - 1) * stride + 3 - size, 0)  # TensorFlow: ceil(size / stride) outputs
        return total // 2, total - total // 2

    expected = F.conv2d(F.pad(x, (*pads(width), *pads(height))), conv.weight, conv.bias, stride, groups=groups)
    got = conv(x_in)
    assert got.shape[-2:] == (-(-height // stride), -(-width // stride))
    torch.testing.assert_close(got, expected)
    (grad_got,) = torch.autograd.grad(got.square().sum(), conv.weight)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), conv.weight)
    torch.testing.assert_close(grad_got, grad_expected)


@pytest.mark.parametrize("in_ch, out_ch, size", [(32, 64, 112), (512, 512, 14), (1024, 1024, 7), (3, 8, 9)])
def test_cost_formulas_against_fvcore(in_ch, out_ch, size):
    standard = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
    separable = nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False), nn.Conv2d(in_ch, out_ch, 1, bias=False)
    )
    assert count_macs(standard, size, in_channels=in_ch)[0] == standard_conv_macs(3, in_ch, out_ch, size)
    assert count_macs(separable, size, in_channels=in_ch)[0] == depthwise_separable_conv_macs(3, in_ch, out_ch, size)
    ratio = depthwise_separable_conv_macs(3, in_ch, out_ch, size) / standard_conv_macs(3, in_ch, out_ch, size)
    assert ratio == pytest.approx(depthwise_separable_reduction(3, out_ch))


def test_reduction_is_8_to_9_times_for_3x3_and_wide_layers():
    # V1 section 3.1: "8 to 9 times less computation than standard convolutions".
    for n in (128, 256, 512, 1024):  # at N = 64 it is 7.9x
        assert 8 <= 1 / depthwise_separable_reduction(3, n) < 9
