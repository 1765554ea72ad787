"""Convolution, batch norm, activation: the unit every MobileNet layer is made of.

Both papers follow every convolution with batch norm (Ioffe & Szegedy, 2015) and, except for the V2 linear
bottleneck, a non-linearity: ReLU in the V1 paper, ReLU6 in V2 and in all of Google's released checkpoints.
The convolution has no bias because batch norm's shift makes one redundant.
"""

from collections.abc import Callable

import torch
from torch import nn

from layers.padding import Conv2dSame

PADDING_MODES = ("symmetric", "tf_same")


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> norm -> activation.

    Args:
        in_ch, out_ch, kernel_size, stride, groups: as for `nn.Conv2d`; padding keeps the size at stride 1.
        activation: a module factory (`nn.ReLU6`, `nn.ReLU`, ...) or None for a linear layer.
        norm_layer: a module factory taking the channel count.
        padding: "symmetric" (PyTorch, (k-1)/2 on each side) or "tf_same" (TensorFlow "SAME").
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        activation: Callable[..., nn.Module] | None = nn.ReLU6,
        *,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        if padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
        conv_type = Conv2dSame if padding == "tf_same" else nn.Conv2d
        self.conv = conv_type(
            in_ch, out_ch, kernel_size, stride, padding=(kernel_size - 1) // 2, groups=groups, bias=False
        )
        self.bn = norm_layer(out_ch)
        self.act = activation(inplace=True) if activation is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = self.bn(x)
        x = self.act(x)
        return x
