"""MobileNetV1 from Table 1 of the paper.

Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications"
(arXiv:1704.04861). A 3x3 stride-2 convolution, 13 depthwise-separable blocks, global average pooling and a
fully connected classifier. The width multiplier alpha thins every layer (section 4.2); the resolution
multiplier is simply the input size (section 4.3): pooling is global, so any resolution works.

Table 1 prints stride 2 for the depthwise conv that runs at 7x7 (the second-to-last block); it is stride 1,
as in Google's release: the paper's 569M multiply-adds only hold that way. Channels at width alpha are
`max(int(c * alpha), 8)`, the rule of Google's release, which is what makes its checkpoints load.
"""

from collections.abc import Callable

from torch import nn

from layers import ConvBNAct, DepthwiseSeparableConv
from mobilenet.common import MobileNetBase, check_width, init_weights

STEM_CHANNELS = 32
# Table 1, one row per depthwise-separable block: output channels c, stride s of the depthwise conv.
V1_BLOCKS: list[tuple[int, int]] = [
    # c, s
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),  # printed "s2" in Table 1; s1 is right
]
MIN_CHANNELS = 8


def v1_channels(channels: int, width_mult: float) -> int:
    """Channels of a V1 layer at width `width_mult`: Google's `max(int(c * alpha), 8)`."""
    return max(int(channels * width_mult), MIN_CHANNELS)


class MobileNetV1(MobileNetBase):
    """MobileNetV1: `features` (stem + 13 DepthwiseSeparableConv), global pool, dropout, `classifier`.

    Args:
        num_classes: classifier outputs; 0 for a backbone without classifier.
        width_mult: the width multiplier alpha.
        dropout: dropout before the classifier.
        activation: ReLU6 by default, as in Google's checkpoints and timm; `nn.ReLU` is the paper's.
        norm_layer: normalization factory.
        padding: "symmetric" or "tf_same" (for TensorFlow-trained weights).
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        activation: Callable[..., nn.Module] = nn.ReLU6,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        check_width(width_mult)
        self.config = dict(
            arch="v1",
            num_classes=num_classes,
            width_mult=width_mult,
            dropout=dropout,
            activation=activation.__name__,
            padding=padding,
        )
        in_ch = v1_channels(STEM_CHANNELS, width_mult)
        layers: list[nn.Module] = [
            ConvBNAct(3, in_ch, 3, 2, activation=activation, norm_layer=norm_layer, padding=padding)
        ]
        for channels, stride in V1_BLOCKS:
            out_ch = v1_channels(channels, width_mult)
            layers.append(
                DepthwiseSeparableConv(
                    in_ch, out_ch, stride, activation=activation, norm_layer=norm_layer, padding=padding
                )
            )
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self._build_head(in_ch, num_classes, dropout)
        init_weights(self)
