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
        symmetric = symmetric_form(self.weight, (top, bottom, left, right), self.dilation)
        # Under tracing (fvcore's MAC count counts every kernel tap, zeros too) the pad keeps the true count.
        if symmetric is not None and not torch.jit.is_tracing():
            weight, padding = symmetric
            if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
                weight = weight.contiguous(memory_format=torch.channels_last)  # else oneDNN reorders it per call
            return F.conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


def symmetric_form(
    weight: torch.Tensor, padding: tuple[int, int, int, int], dilation: tuple[int, ...]
) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """The same convolution with symmetric padding: `(weight', (pad_h, pad_w))`, or None if there is none.

    "SAME" pads one pixel more after than before when its total is odd (every stride-2 layer on an even input).
    Padding symmetrically by the larger amount and putting one zero row (column) in front of the kernel gives
    exactly the same sums at the same output positions, with no padded copy of the input (a separate pad op
    copies every stride-2 layer's input, and slowed Google's imported models against the same network from
    scratch). The extra tap multiplies only zero weights. Needs an undilated kernel."""
    top, bottom, left, right = padding
    extra_h, extra_w = bottom - top, right - left
    if extra_h not in (0, 1) or extra_w not in (0, 1) or (any(d != 1 for d in dilation) and (extra_h or extra_w)):
        return None
    if extra_h or extra_w:
        weight = F.pad(weight, (extra_w, 0, extra_h, 0))  # zero column on the left, zero row on top
    return weight, (bottom, right)
