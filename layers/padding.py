"""TensorFlow "SAME" padding.

TensorFlow pads a convolution so that the output has ceil(input / stride) positions, and when the total
padding is odd it puts the extra pixel on the right/bottom. PyTorch's symmetric padding puts one pixel on
each side. For a 3x3 stride-2 convolution on an even input (224 -> 112) TensorFlow pads (0, 1) and PyTorch
(1, 1): the same output size, but the sampling grid is shifted by one pixel. Google's MobileNet checkpoints
were trained with "SAME", so an imported model reproduces them only with this padding.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel_size: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of one spatial dimension under TensorFlow "SAME"."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TensorFlow "SAME" padding computed from the input size at run time.

    Same parameters and state_dict keys as `nn.Conv2d`; its `padding` argument is ignored (always 0).
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if top == bottom and left == right:
            # Symmetric (every stride-1 layer): the convolution pads by itself, with no separate pad op for
            # exporters and quantizers to work around.
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)
