"""`create_model`: the one way to build a model, from code, the command line or a checkpoint's config."""

from torch import nn

from mobilenet.common import MobileNetBase
from mobilenet.v1 import MobileNetV1
from mobilenet.v2 import MobileNetV2

ARCHITECTURES = {"v1": MobileNetV1, "v2": MobileNetV2}
ACTIVATIONS = {"ReLU": nn.ReLU, "ReLU6": nn.ReLU6}


def create_model(arch: str, *, width_mult: float = 1.0, num_classes: int = 200, **kwargs) -> MobileNetBase:
    """Build MobileNet `arch` ("v1" or "v2"); `kwargs` go to the constructor.

    `activation` may be given by name ("ReLU", "ReLU6"), as stored in `model.config`, so that
    `create_model(**model.config)` rebuilds the architecture.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch {arch!r}: choose one of {sorted(ARCHITECTURES)}")
    activation = kwargs.get("activation")
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: choose one of {sorted(ACTIVATIONS)}")
        kwargs["activation"] = ACTIVATIONS[activation]
    return ARCHITECTURES[arch](width_mult=width_mult, num_classes=num_classes, **kwargs)
