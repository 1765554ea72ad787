"""torchvision's `mobilenet_v2` and timm's `mobilenetv1_100` as recorded from the real libraries.

`references/layouts/NAME.json` holds, for each model, its state_dict's keys, shapes and dtypes and the
library's logits for seeded weights (`seeded_state`) on a seeded input (`seeded_input`): the interop tests
load the same weights into our models and must give the library's logits, without the libraries installed.
The files were made by `python -m references.make_layouts` (needs torchvision and timm; see its docstring).
"""

import json
import math
from pathlib import Path

import torch

FOLDER = Path(__file__).resolve().parent / "layouts"
# name -> (library call, input resolution)
MODELS = {
    "torchvision_mobilenet_v2_1.0": ("torchvision.models.mobilenet_v2(width_mult=1.0)", 96),
    "torchvision_mobilenet_v2_0.5": ("torchvision.models.mobilenet_v2(width_mult=0.5)", 96),
    "timm_mobilenetv1_100": ("timm.create_model('mobilenetv1_100')", 96),
}


def seeded_state(layout: list[list], seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights for a state_dict `layout` ([key, shape, dtype] rows), from `seed` alone: convolution and linear
    weights ~ N(0, 1/fan_in) (activations stay in range through the depth), batch-norm scales in [0.5, 1.5],
    shifts and running means in [-0.2, 0.2], running variances in [0.5, 2]."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in layout:
        if dtype == "int64":
            state[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        uniform = torch.rand(shape, generator=generator)
        if key.endswith("running_var"):
            state[key] = 0.5 + 1.5 * uniform
        elif len(shape) == 1 and (key.endswith("weight") or key.endswith("scale")):
            state[key] = 0.5 + uniform
        elif len(shape) == 1:
            state[key] = 0.4 * uniform - 0.2
        else:
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(math.prod(shape[1:]))
    return state


def seeded_input(resolution: int, seed: int = 1) -> torch.Tensor:
    """Two images (2, 3, R, R) of standard-normal pixels."""
    return torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))


def read(name: str) -> dict:
    """The recorded layout and logits of model `name` (a key of `MODELS`)."""
    return json.loads((FOLDER / f"{name}.json").read_text())
