"""Load torchvision's and timm's MobileNet state_dicts into our models (no torchvision or timm needed).

- torchvision `mobilenet_v2` (314 keys): `features.0.{0,1}` stem conv/BN, `features.1.conv.{0.0,0.1,1,2}` for
  the t = 1 block, `features.{2..17}.conv.{0.0,0.1,1.0,1.1,2,3}` for the others, `features.18.{0,1}` head,
  `classifier.1` the linear layer. Our V2 has the same `features` indices, so only the inner names change.
- timm `mobilenetv1_100`: `conv_stem`, `bn1`, `blocks.{stage}.{i}.{conv_dw,bn1,conv_pw,bn2}`, `classifier`;
  a new stage starts at every stride-2 block. timm's V1 uses ReLU6, our default.

Each loader builds the list of (our prefix, their prefix) pairs by walking our model, renames, and loads
strictly: a key missing on either side or a shape mismatch raises an error that names the key and shapes.
"""

from collections.abc import Mapping

import torch
from torch import nn

from layers import ConvBNAct, DepthwiseSeparableConv, InvertedResidual
from mobilenet.v1 import MobileNetV1
from mobilenet.v2 import MobileNetV2


def _conv_bn_pairs(ours: str, conv: str, bn: str) -> list[tuple[str, str]]:
    return [(f"{ours}.conv", conv), (f"{ours}.bn", bn)]


def _remap(model: nn.Module, state_dict: Mapping[str, torch.Tensor], pairs: list[tuple[str, str]], source: str) -> None:
    """Load `state_dict` into `model`, renaming their prefix to ours for each pair; strict, with clear errors."""
    ours = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for our_prefix, their_prefix in pairs:
        for key in ours:
            if key == our_prefix or key.startswith(our_prefix + "."):
                their_key = their_prefix + key[len(our_prefix) :]
                if their_key not in state_dict:
                    raise KeyError(
                        f"{source} state_dict is missing key {their_key!r} (for our {key!r}, shape {tuple(ours[key].shape)})"
                    )
                value = state_dict[their_key]
                if tuple(value.shape) != tuple(ours[key].shape):
                    raise ValueError(
                        f"shape mismatch: {source} {their_key!r} has shape {tuple(value.shape)}, "
                        f"our {key!r} has shape {tuple(ours[key].shape)}"
                    )
                renamed[key] = value
                used.add(their_key)
    unexpected = sorted(set(state_dict) - used)
    if unexpected:
        raise KeyError(
            f"unexpected key(s) in {source} state_dict: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    missing = sorted(set(ours) - set(renamed))
    if missing:
        raise KeyError(f"our model's key(s) {missing[:5]} have no counterpart in the {source} state_dict")
    model.load_state_dict(renamed, strict=True)


def load_torchvision_mobilenet_v2(model: MobileNetV2, state_dict: Mapping[str, torch.Tensor]) -> MobileNetV2:
    """Load torchvision's `mobilenet_v2` state_dict into our `MobileNetV2` of the same width and class count."""
    pairs: list[tuple[str, str]] = []
    for i, layer in enumerate(model.features):
        if isinstance(layer, ConvBNAct):
            pairs += _conv_bn_pairs(f"features.{i}", f"features.{i}.0", f"features.{i}.1")
        elif isinstance(layer, InvertedResidual):
            units = ["conv_dw"] if isinstance(layer.conv_pw, nn.Identity) else ["conv_pw", "conv_dw"]
            for j, unit in enumerate(units):
                pairs += _conv_bn_pairs(f"features.{i}.{unit}", f"features.{i}.conv.{j}.0", f"features.{i}.conv.{j}.1")
            j = len(units)
            pairs += _conv_bn_pairs(f"features.{i}.conv_pwl", f"features.{i}.conv.{j}", f"features.{i}.conv.{j + 1}")
        else:
            raise TypeError(f"features.{i} is a {type(layer).__name__}, not a MobileNetV2 layer")
    pairs.append(("classifier", "classifier.1"))
    _remap(model, state_dict, pairs, "torchvision")
    return model


def load_timm_mobilenetv1(model: MobileNetV1, state_dict: Mapping[str, torch.Tensor]) -> MobileNetV1:
    """Load timm's `mobilenetv1_100` state_dict into our `MobileNetV1` (build it with ReLU6, the default)."""
    pairs: list[tuple[str, str]] = _conv_bn_pairs("features.0", "conv_stem", "bn1")
    stage, index = 0, -1
    for i, layer in enumerate(list(model.features)[1:], start=1):
        if not isinstance(layer, DepthwiseSeparableConv):
            raise TypeError(f"features.{i} is a {type(layer).__name__}, not a MobileNetV1 block")
        if layer.conv_dw.conv.stride[0] == 2:
            stage, index = stage + 1, 0
        else:
            index += 1
        theirs = f"blocks.{stage}.{index}"
        pairs += _conv_bn_pairs(f"features.{i}.conv_dw", f"{theirs}.conv_dw", f"{theirs}.bn1")
        pairs += _conv_bn_pairs(f"features.{i}.conv_pw", f"{theirs}.conv_pw", f"{theirs}.bn2")
    pairs.append(("classifier", "classifier"))
    _remap(model, state_dict, pairs, "timm")
    return model
