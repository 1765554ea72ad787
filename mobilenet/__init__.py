"""MobileNetV1 and MobileNetV2 built from the papers' tables, with weight import and analysis tools.

- `MobileNetV1` (Howard et al. 2017, Table 1) and `MobileNetV2` (Sandler et al. 2018, Table 2).
- `create_model(arch, ...)`: the one way to build either.
- `model_summary`: the model as the papers' tables; `flops.count_macs`: fvcore multiply-adds.
- `interop`: torchvision / timm state_dict layouts; `tflite` / `pretrained`: Google's checkpoints.
- `load_checkpoint`: a model from a training checkpoint; `optimize_for_inference`: the fast path.
"""

from mobilenet.checkpoint import load_checkpoint
from mobilenet.factory import create_model
from mobilenet.inference import optimize_for_inference
from mobilenet.interop import load_timm_mobilenetv1, load_torchvision_mobilenet_v2
from mobilenet.summary import model_summary
from mobilenet.v1 import MobileNetV1
from mobilenet.v2 import MobileNetV2

__all__ = [
    "MobileNetV1",
    "MobileNetV2",
    "create_model",
    "load_checkpoint",
    "load_timm_mobilenetv1",
    "load_torchvision_mobilenet_v2",
    "model_summary",
    "optimize_for_inference",
]
