"""What MobileNetV1 and MobileNetV2 share: the head (global pool, dropout, linear), weight init, and the
`features` / `forward_head` split that Grad-CAM, fine-tuning and the interop loaders rely on."""

import torch
from torch import nn

# What ImageNet-trained weights expect as input, as mean/std of RGB in [0, 1] (torchvision's and timm's
# statistics); a model's card (`mobilenet.card`) records the normalization of its own weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MobileNetBase(nn.Module):
    """Base of both models. Subclasses build `self.features` and call `_build_head` and `init_weights`.

    `config` holds the constructor arguments (activation by class name) so that `mobilenet.create_model(**config)`
    rebuilds the same architecture from a checkpoint.
    """

    config: dict
    features: nn.Sequential
    num_features: int

    def _build_head(self, num_features: int, num_classes: int, dropout: float) -> None:
        self.num_features = num_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(x).flatten(1)
        x = self.dropout(x)
        return self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised `num_classes`-way one (0: none)."""
        if num_classes > 0:
            self.classifier = nn.Linear(self.num_features, num_classes)
            init_weights(self.classifier)
        else:
            self.classifier = nn.Identity()
        self.config["num_classes"] = num_classes


def check_width(width_mult: float) -> None:
    if not 0 < width_mult <= 4:
        raise ValueError(f"width_mult must be in (0, 4] (e.g. 0.25, 0.35, 0.5, 0.75, 1.0, 1.4), got {width_mult}")


def init_weights(model: nn.Module) -> None:
    """Initialise as the reference implementations: conv kaiming-normal (fan_out), BN 1/0, linear N(0, 0.01)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0, 0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
