"""MobileNetV2 from Table 2 of the paper.

Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (arXiv:1801.04381). A 3x3
stride-2 convolution, 17 inverted-residual blocks in seven `t, c, n, s` groups, a 1x1 convolution to 1280
channels, global average pooling, dropout and a linear classifier. Channels at width alpha are rounded to
multiples of 8 with `make_divisible`; the last convolution never gets thinner than 1280 (section 6.1:
"for multipliers less than one, we apply width multiplier to all layers except the very last").
"""

from collections.abc import Callable

from torch import nn

from layers import ConvBNAct, InvertedResidual, make_divisible
from mobilenet.common import MobileNetBase, check_width, init_weights

STEM_CHANNELS = 32
LAST_CHANNELS = 1280
# Table 2: expansion factor t, output channels c, repeats n, stride s of the first repeat.
V2_BLOCKS: list[tuple[int, int, int, int]] = [
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class MobileNetV2(MobileNetBase):
    """MobileNetV2: `features` (stem + 17 InvertedResidual + 1x1 head conv), global pool, dropout, `classifier`.

    Args:
        num_classes: classifier outputs; 0 for a backbone without classifier.
        width_mult: the width multiplier alpha.
        dropout: dropout before the classifier (0.2 as in the reference implementations).
        round_nearest: channel counts are multiples of this.
        activation, norm_layer: factories (ReLU6 and BatchNorm2d in the paper).
        padding: "symmetric" or "tf_same" (for TensorFlow-trained weights).
    """

    def __init__(
        self,
        *,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        dropout: float = 0.2,
        round_nearest: int = 8,
        activation: Callable[..., nn.Module] = nn.ReLU6,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        check_width(width_mult)
        self.config = dict(
            arch="v2",
            num_classes=num_classes,
            width_mult=width_mult,
            dropout=dropout,
            round_nearest=round_nearest,
            activation=activation.__name__,
            padding=padding,
        )
        in_ch = make_divisible(STEM_CHANNELS * width_mult, round_nearest)
        layers: list[nn.Module] = [
            ConvBNAct(3, in_ch, 3, 2, activation=activation, norm_layer=norm_layer, padding=padding)
        ]
        for expand_ratio, channels, repeats, first_stride in V2_BLOCKS:
            out_ch = make_divisible(channels * width_mult, round_nearest)
            for i in range(repeats):
                stride = first_stride if i == 0 else 1
                layers.append(
                    InvertedResidual(
                        in_ch,
                        out_ch,
                        stride,
                        expand_ratio,
                        activation=activation,
                        norm_layer=norm_layer,
                        padding=padding,
                    )
                )
                in_ch = out_ch
        last_ch = make_divisible(LAST_CHANNELS * max(1.0, width_mult), round_nearest)
        layers.append(ConvBNAct(in_ch, last_ch, 1, activation=activation, norm_layer=norm_layer))
        self.features = nn.Sequential(*layers)
        self._build_head(last_ch, num_classes, dropout)
        init_weights(self)
