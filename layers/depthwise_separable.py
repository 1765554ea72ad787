"""The MobileNetV1 block: a depthwise-separable convolution.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications"
(arXiv:1704.04861), section 3.1 and Figure 3: a standard convolution is factorised into a 3x3 depthwise
convolution (one filter per input channel) and a 1x1 pointwise convolution that combines channels, each
followed by batch norm and ReLU. The cost drops from D_K*D_K*M*N*D_F*D_F to D_K*D_K*M*D_F*D_F + M*N*D_F*D_F.
"""

from collections.abc import Callable

import torch
from torch import nn

from layers.conv_bn_act import ConvBNAct


class DepthwiseSeparableConv(nn.Module):
    """3x3 depthwise ConvBNAct (`conv_dw`, carries the stride) then 1x1 pointwise ConvBNAct (`conv_pw`)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        activation: Callable[..., nn.Module] | None = nn.ReLU6,
        *,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.conv_dw = ConvBNAct(
            in_ch, in_ch, 3, stride, groups=in_ch, activation=activation, norm_layer=norm_layer, padding=padding
        )
        self.conv_pw = ConvBNAct(in_ch, out_ch, 1, activation=activation, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_dw(x)
        x = self.conv_pw(x)
        return x
