"""The MobileNetV2 block: an inverted residual with a linear bottleneck.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (arXiv:1801.04381), section 3.3,
Table 1 and Figure 3b: a 1x1 convolution expands the thin input by the factor t (absent when t = 1), a 3x3
depthwise convolution filters the wide tensor, and a 1x1 projection brings it back to a thin bottleneck
with no activation (ReLU in a low-dimensional space destroys information, section 3.2). The shortcut joins
the thin bottlenecks, and exists only when the block keeps the shape: stride 1 and in_ch == out_ch.
"""

from collections.abc import Callable

import torch
from torch import nn

from layers.conv_bn_act import ConvBNAct


class InvertedResidual(nn.Module):
    """Expansion `conv_pw` (1x1, ReLU6), depthwise `conv_dw` (3x3, ReLU6), linear projection `conv_pwl` (1x1)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        expand_ratio: int,
        *,
        activation: Callable[..., nn.Module] = nn.ReLU6,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = round(in_ch * expand_ratio)
        self.use_residual = stride == 1 and in_ch == out_ch
        self.conv_pw: nn.Module
        if expand_ratio == 1:
            self.conv_pw = nn.Identity()
        else:
            self.conv_pw = ConvBNAct(in_ch, hidden, 1, activation=activation, norm_layer=norm_layer)
        self.conv_dw = ConvBNAct(
            hidden, hidden, 3, stride, groups=hidden, activation=activation, norm_layer=norm_layer, padding=padding
        )
        self.conv_pwl = ConvBNAct(hidden, out_ch, 1, activation=None, norm_layer=norm_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_pw(x)
        x = self.conv_dw(x)
        x = self.conv_pwl(x)
        if self.use_residual:
            x = x + shortcut
        return x
