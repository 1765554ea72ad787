"""A depthwise convolution written out by hand, for teaching.

A depthwise convolution applies one k x k filter to each input channel separately (Howard et al. 2017,
section 3.1): output[n, c] = sum over kernel offsets (i, j) of weight[c, 0, i, j] * input[n, c] shifted by
(i, j). Here that sum is literally a loop over the k*k offsets, each a strided slice of the padded input
times one weight per channel. It equals `F.conv2d(x, weight, stride=s, padding=p, groups=C)`.
"""

import torch
import torch.nn.functional as F


def depthwise_conv2d(x: torch.Tensor, weight: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """Depthwise convolution of `x` (N, C, H, W) with `weight` (C, 1, kH, kW), without any conv call."""
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[1] != 1 or weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"expected x (N, C, H, W) and weight (C, 1, kH, kW); got {tuple(x.shape)} and {tuple(weight.shape)}"
        )
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    kernel_h, kernel_w = weight.shape[-2:]
    out_h = (x.shape[-2] - kernel_h) // stride + 1
    out_w = (x.shape[-1] - kernel_w) // stride + 1
    out = x.new_zeros(x.shape[0], x.shape[1], out_h, out_w)
    for i in range(kernel_h):
        for j in range(kernel_w):
            window = x[:, :, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride]
            out += window * weight[:, 0, i, j].view(1, -1, 1, 1)
    return out
