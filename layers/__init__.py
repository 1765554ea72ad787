"""Hand-written building blocks of MobileNet V1 and V2.

One idea per file:
- `channels.make_divisible`: the width-multiplier channel rounding of the V2 reference implementation.
- `conv_bn_act.ConvBNAct`: convolution (no bias), batch norm, optional activation.
- `padding.Conv2dSame`: a convolution with TensorFlow "SAME" padding, for imported Google weights.
- `depthwise_separable.DepthwiseSeparableConv`: the V1 block (Howard et al. 2017, section 3.1).
- `inverted_residual.InvertedResidual`: the V2 block (Sandler et al. 2018, section 3.3).
- `depthwise_conv.depthwise_conv2d`: a depthwise convolution written out by hand, for teaching.
- `cost`: the V1 paper's multiply-add formulas (section 3.1).
"""

from layers.channels import make_divisible
from layers.conv_bn_act import ConvBNAct
from layers.cost import (
    depthwise_separable_conv_macs,
    depthwise_separable_reduction,
    standard_conv_macs,
)
from layers.depthwise_conv import depthwise_conv2d
from layers.depthwise_separable import DepthwiseSeparableConv
from layers.inverted_residual import InvertedResidual
from layers.padding import Conv2dSame

__all__ = [
    "Conv2dSame",
    "ConvBNAct",
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "depthwise_conv2d",
    "depthwise_separable_conv_macs",
    "depthwise_separable_reduction",
    "make_divisible",
    "standard_conv_macs",
]
