"""Import Google's official MobileNet V1/V2 `.tflite` checkpoints into our models (no TensorFlow).

Google published ImageNet checkpoints for 16 V1 variants (width 1.0/0.75/0.5/0.25 x resolution
224/192/160/128) and 22 V2 variants, as float and quantized `.tflite` files. `load_tflite` reads the file with
the `tflite` flatbuffer schema and numpy, walks the graph, and works out everything from it:

- the architecture: V2 has residual ADDs and linear (activation-free) projections, V1 has neither;
- the width multiplier: the one at which our model's convolution shapes equal the file's, all of them;
- the input resolution (the input tensor), the class count (the last convolution or fully connected layer),
  the activation (the fused RELU6/RELU) and the input normalization (the file's input quantization, or
  [-1, 1] for float files).

Tensors may be float32, float16 (through DEQUANTIZE ops), uint8 or int8, quantized per tensor or per channel;
everything is dequantized with the file's scales and zero points. Batch norm is folded into each
convolution in these graphs: the kernel goes into our conv and the bias into an identity batch norm, which
reproduces the file's function exactly in eval mode. Call `mobilenet.pretrained.calibrate_batchnorm` on a
few batches of real images before fine-tuning (see there why). The models use TensorFlow "SAME" padding
(`padding="tf_same"`), which pads right/bottom when the total is odd.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from cli import InputError
from layers import ConvBNAct
from mobilenet.card import ModelCard
from mobilenet.common import MobileNetBase
from mobilenet.factory import create_model
from mobilenet.tta import Inference

_ACTIVATIONS = {0: None, 1: "ReLU", 3: "ReLU6"}
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 9: np.int8, 4: np.int64}
# Ops that carry no weights: pooling, reshaping, the softmax and (de)quantization.
_STRUCTURAL_OPS = {"AVERAGE_POOL_2D", "MEAN", "RESHAPE", "SQUEEZE", "SOFTMAX", "DEQUANTIZE", "QUANTIZE"}
V1_WIDTHS = (1.0, 0.75, 0.5, 0.25)
V2_WIDTHS = (1.0, 0.75, 0.5, 0.35, 1.3, 1.4)


class TFLiteImportError(InputError, ValueError):
    """The file is not a MobileNet V1/V2 graph that our models can reproduce."""


@dataclass
class _Layer:
    op_index: int
    kind: str  # "conv", "depthwise" or "fc"
    weight: np.ndarray  # PyTorch layout
    bias: np.ndarray | None
    stride: int
    padding: str  # "SAME" or "VALID"
    activation: str | None
    input_shape: tuple[int, ...]


class _Graph:
    """The first subgraph of a .tflite file, with dequantized constant tensors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        import tflite  # the flatbuffer schema, imported only when a .tflite file is read

        self.schema = tflite
        self.op_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self.model = tflite.Model.GetRootAsModel(self.data, 0)
        self.graph = self.model.Subgraphs(0)
        self.producer: dict[int, int] = {}
        for i in range(self.graph.OperatorsLength()):
            for t in self.graph.Operators(i).OutputsAsNumpy():
                self.producer[int(t)] = i

    def op_name(self, index: int) -> str:
        code = self.model.OperatorCodes(self.graph.Operators(index).OpcodeIndex())
        return self.op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")

    def shape(self, tensor: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.graph.Tensors(tensor).ShapeAsNumpy())

    def quantization(self, tensor: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        q = self.graph.Tensors(tensor).Quantization()
        if q is None or q.ScaleLength() == 0:
            return None
        return q.ScaleAsNumpy().astype(np.float64), q.ZeroPointAsNumpy().astype(np.float64), q.QuantizedDimension()

    def constant(self, tensor: int) -> np.ndarray:
        """The float32 value of a constant tensor (dequantized; float16 followed through DEQUANTIZE)."""
        t = self.graph.Tensors(tensor)
        buffer = self.model.Buffers(t.Buffer())
        if buffer.Offset() > 1:  # large buffers may live after the flatbuffer
            raw = np.frombuffer(self.data, np.uint8, count=buffer.Size(), offset=buffer.Offset())
        elif buffer.DataLength() > 0:
            raw = buffer.DataAsNumpy()
        elif tensor in self.producer and self.op_name(self.producer[tensor]) == "DEQUANTIZE":
            return self.constant(int(self.graph.Operators(self.producer[tensor]).InputsAsNumpy()[0]))
        else:
            raise TFLiteImportError(f"{self.path}: tensor {t.Name().decode()!r} is not a constant")
        if t.Type() not in _DTYPES:
            raise TFLiteImportError(f"{self.path}: tensor {t.Name().decode()!r} has unsupported type {t.Type()}")
        values = raw.view(_DTYPES[t.Type()]).reshape(self.shape(tensor)).astype(np.float64)
        quant = self.quantization(tensor)
        if quant is not None and t.Type() in (2, 3, 9):
            scale, zero_point, axis = quant
            if len(scale) > 1:  # per channel
                view = [1] * values.ndim
                view[axis] = -1
                scale, zero_point = scale.reshape(view), zero_point.reshape(view)
            values = (values - zero_point) * scale
        return values.astype(np.float32)

    def options(self, index: int, kind: type):
        table = self.graph.Operators(index).BuiltinOptions()
        options = kind()
        options.Init(table.Bytes, table.Pos)
        return options


def _read_layers(graph: _Graph) -> tuple[list[_Layer], bool]:
    """The weight layers in graph order, and whether the graph has residual additions."""
    layers: list[_Layer] = []
    has_add = False
    for i in range(graph.graph.OperatorsLength()):
        name = graph.op_name(i)
        inputs = [int(t) for t in graph.graph.Operators(i).InputsAsNumpy()]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = name == "DEPTHWISE_CONV_2D"
            schema = graph.schema
            opts = graph.options(i, schema.DepthwiseConv2DOptions if depthwise else schema.Conv2DOptions)
            if opts.StrideH() != opts.StrideW():
                raise TFLiteImportError(f"{graph.path}: op {i} ({name}) has unequal strides")
            if opts.DilationHFactor() not in (0, 1) or opts.DilationWFactor() not in (0, 1):
                raise TFLiteImportError(f"{graph.path}: op {i} ({name}) is dilated")
            if depthwise and opts.DepthMultiplier() not in (0, 1):
                raise TFLiteImportError(f"{graph.path}: op {i} has depth multiplier {opts.DepthMultiplier()}")
            kernel = graph.constant(inputs[1])
            # TFLite: conv [out, kh, kw, in], depthwise [1, kh, kw, channels]; PyTorch: [out, in / groups, kh, kw].
            weight = kernel.transpose(3, 0, 1, 2) if depthwise else kernel.transpose(0, 3, 1, 2)
            activation = opts.FusedActivationFunction()
            if activation not in _ACTIVATIONS:
                raise TFLiteImportError(f"{graph.path}: op {i} ({name}) has unsupported activation {activation}")
            layers.append(
                _Layer(
                    i,
                    "depthwise" if depthwise else "conv",
                    np.ascontiguousarray(weight),
                    graph.constant(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None,
                    opts.StrideH(),
                    "SAME" if opts.Padding() == schema.Padding.SAME else "VALID",
                    _ACTIVATIONS[activation],
                    graph.shape(inputs[0]),
                )
            )
        elif name == "FULLY_CONNECTED":
            bias = graph.constant(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
            layers.append(_Layer(i, "fc", graph.constant(inputs[1]), bias, 1, "VALID", None, graph.shape(inputs[0])))
        elif name == "ADD":
            has_add = True
        elif name not in _STRUCTURAL_OPS:
            raise TFLiteImportError(f"{graph.path}: op {i} is {name}, which is not part of a MobileNet V1/V2 graph")
    return layers, has_add


def _match_width(arch: str, features: list[_Layer], activation: str, path: Path) -> tuple[float, MobileNetBase]:
    """The width at which our `arch` has exactly the file's convolution shapes, and that model (backbone)."""
    last = features[-1].weight.shape[0] if arch == "v1" else features[-2].weight.shape[0]
    estimate = last / (1024 if arch == "v1" else 320)
    known = V1_WIDTHS if arch == "v1" else V2_WIDTHS
    candidates = sorted(set(known) | {round(estimate, 2)}, key=lambda w: abs(w - estimate))
    first_mismatch = None
    for width in candidates[:4]:
        if not 0 < width <= 4:
            continue
        model = create_model(arch, width_mult=width, num_classes=0, activation=activation, padding="tf_same")
        units = [m for m in model.modules() if isinstance(m, ConvBNAct)]
        if len(units) != len(features):
            raise TFLiteImportError(
                f"{path}: {len(features)} convolutions before the classifier, our MobileNet{arch.upper()} has {len(units)}"
            )
        for k, (unit, layer) in enumerate(zip(units, features)):
            if tuple(unit.conv.weight.shape) != layer.weight.shape:
                first_mismatch = first_mismatch or (
                    f"op {layer.op_index} has kernel {layer.weight.shape}, our layer {k} at width {width} has "
                    f"{tuple(unit.conv.weight.shape)}"
                )
                break
        else:
            return width, model
    raise TFLiteImportError(f"{path}: no MobileNet{arch.upper()} width reproduces the file's shapes ({first_mismatch})")


def load_tflite(
    path: str | Path, *, num_classes: int | None = None, keep_background: bool = False
) -> tuple[MobileNetBase, ModelCard]:
    """Build our MobileNet from a `.tflite` file and load its weights.

    Args:
        num_classes: None keeps the file's classifier (1001 outputs: "background" dropped unless
            `keep_background`); K > 0 puts a fresh K-way classifier on the pretrained backbone; 0 gives
            the backbone alone. A file without classifier loads as a backbone (or with a fresh K-way one).

    Returns the model in eval mode and its card: the file's resolution and normalization, one plain pass, no
    class names (the file has none; `mobilenet.pretrained` finds a labels file beside it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .tflite file")
    try:
        return _build(_Graph(path), path, num_classes, keep_background)
    except TFLiteImportError:
        raise
    except Exception as e:  # a corrupt flatbuffer fails anywhere: struct, index, type or value errors
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise TFLiteImportError(f"{path}: not a readable MobileNet .tflite file ({reason})") from None


def _build(
    graph: _Graph, path: Path, num_classes: int | None, keep_background: bool
) -> tuple[MobileNetBase, ModelCard]:
    layers, has_add = _read_layers(graph)
    if not layers:
        raise TFLiteImportError(f"{path}: no convolution found")
    # The classifier is whatever weight layer runs on a 1x1 map after global pooling.
    spatial = [layer for layer in layers if layer.kind != "fc" and math.prod(layer.input_shape[1:3]) > 1]
    head = layers[len(spatial) :]
    if len(head) > 1:
        raise TFLiteImportError(f"{path}: {len(head)} layers after global pooling, a MobileNet has at most one")
    linear = [layer for layer in spatial if layer.activation is None]
    arch = "v2" if has_add or linear else "v1"
    activations = {layer.activation for layer in spatial} - {None}
    if len(activations) != 1:
        raise TFLiteImportError(f"{path}: expected one activation type, found {sorted(map(str, activations))}")
    width, model = _match_width(arch, spatial, str(activations.pop()), path)

    units = [m for m in model.modules() if isinstance(m, ConvBNAct)]
    with torch.no_grad():
        for unit, layer in zip(units, spatial):
            unit.conv.weight.copy_(torch.from_numpy(layer.weight))
            bias = torch.from_numpy(layer.bias) if layer.bias is not None else torch.zeros(layer.weight.shape[0])
            _set_affine(cast(nn.BatchNorm2d, unit.bn), torch.ones_like(bias), bias)

    file_classes = head[0].weight.shape[0] if head else 0
    if num_classes is None and file_classes:
        weight = torch.from_numpy(head[0].weight.reshape(file_classes, -1))
        bias = torch.from_numpy(head[0].bias) if head[0].bias is not None else torch.zeros(file_classes)
        if file_classes == 1001 and not keep_background:
            weight, bias = weight[1:], bias[1:]
        model.reset_classifier(weight.shape[0])
        classifier = cast(nn.Linear, model.classifier)
        with torch.no_grad():
            classifier.weight.copy_(weight)
            classifier.bias.copy_(bias)
    else:
        model.reset_classifier(num_classes or 0)

    input_tensor = int(graph.graph.InputsAsNumpy()[0])
    resolution = graph.shape(input_tensor)[1]
    quant = graph.quantization(input_tensor)
    if quant is not None and graph.graph.Tensors(input_tensor).Type() in (3, 9):
        scale, zero_point = float(quant[0][0]), float(quant[1][0])
        if graph.graph.Tensors(input_tensor).Type() == 9:  # int8 input: pixel p arrives as p - 128
            zero_point += 128
        mean, std = (zero_point / 255,) * 3, (1 / (255 * scale),) * 3
    else:  # float files expect (x - 127.5) / 127.5
        mean, std = (0.5,) * 3, (0.5,) * 3
    card = ModelCard((), mean, std, resolution, Inference(resolution), source=str(path))
    return model.eval(), card


def _set_affine(bn: nn.BatchNorm2d, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Make eval-mode `bn` compute scale * x + shift exactly (running mean 0, running var 1)."""
    if bn.running_mean is not None and bn.running_var is not None:
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0)
    bn.weight.copy_(scale * math.sqrt(1.0 + bn.eps))
    bn.bias.copy_(shift)
