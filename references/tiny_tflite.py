"""Write a small float32 MobileNet `.tflite` file laid out as Google's are, so a fresh clone can test the importer.

The graph has the ops and conventions of Google's published files: NHWC tensors, CONV_2D and
DEPTHWISE_CONV_2D with "SAME" padding and a fused RELU6 (none on V2's linear bottlenecks), ADD for V2's
residuals, AVERAGE_POOL_2D over the last feature map, a 1x1 CONV_2D classifier with bias, RESHAPE and SOFTMAX.
Kernels are [out, kh, kw, in] (depthwise: [1, kh, kw, channels]), weights drawn from `seed` (numpy). The
layer sequence (kernel sizes, strides, channel counts, residuals) is taken from the paper-exact
`mobilenet.create_model`; the file's function is then whatever TFLite computes from it, which is what the
tests compare the importer against (LiteRT's interpreter).
"""

from pathlib import Path

import flatbuffers
import numpy as np
import tflite
from torch import nn

from layers import ConvBNAct
from mobilenet import create_model

RELU6, NONE = tflite.ActivationFunctionType.RELU6, tflite.ActivationFunctionType.NONE


class _Writer:
    def __init__(self) -> None:
        self.builder = flatbuffers.Builder(1 << 20)
        self.buffers: list[bytes] = [b""]  # buffer 0: empty, by convention
        self.tensors: list[tuple[str, list[int], int]] = []  # name, shape, buffer
        self.ops: list[tuple[int, list[int], list[int], int, object]] = []  # code, inputs, outputs, options
        self.codes: list[int] = []

    def tensor(self, name: str, shape: list[int], data: np.ndarray | None = None) -> int:
        buffer = 0
        if data is not None:
            self.buffers.append(np.ascontiguousarray(data, dtype="<f4").tobytes())
            buffer = len(self.buffers) - 1
        self.tensors.append((name, shape, buffer))
        return len(self.tensors) - 1

    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int, options) -> None:
        if code not in self.codes:
            self.codes.append(code)
        self.ops.append((self.codes.index(code), inputs, outputs, options_type, options))

    def ints(self, values: list[int]):
        return self.builder.CreateNumpyVector(np.array(values, dtype=np.int32))

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        b = self.builder
        buffers = []
        for data in self.buffers:
            vector = b.CreateNumpyVector(np.frombuffer(data, np.uint8)) if data else None
            tflite.BufferStart(b)
            if vector is not None:
                tflite.BufferAddData(b, vector)
            buffers.append(tflite.BufferEnd(b))
        tensors = []
        for name, shape, buffer in self.tensors:
            name_offset, shape_offset = b.CreateString(name), self.ints(shape)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape_offset)
            tflite.TensorAddType(b, tflite.TensorType.FLOAT32)
            tflite.TensorAddBuffer(b, buffer)
            tflite.TensorAddName(b, name_offset)
            tensors.append(tflite.TensorEnd(b))
        operators = []
        for code, op_inputs, op_outputs, options_type, options in self.ops:
            options_offset = options(b)
            in_offset, out_offset = self.ints(op_inputs), self.ints(op_outputs)
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, code)
            tflite.OperatorAddInputs(b, in_offset)
            tflite.OperatorAddOutputs(b, out_offset)
            tflite.OperatorAddBuiltinOptionsType(b, options_type)
            tflite.OperatorAddBuiltinOptions(b, options_offset)
            operators.append(tflite.OperatorEnd(b))
        codes = []
        for code in self.codes:
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, code)
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, 1)
            codes.append(tflite.OperatorCodeEnd(b))
        vectors = {name: _vector(b, items) for name, items in (("t", tensors), ("o", operators), ("c", codes))}
        vectors["b"] = _vector(b, buffers)
        graph_in, graph_out, graph_name = self.ints(inputs), self.ints(outputs), b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, vectors["t"])
        tflite.SubGraphAddInputs(b, graph_in)
        tflite.SubGraphAddOutputs(b, graph_out)
        tflite.SubGraphAddOperators(b, vectors["o"])
        tflite.SubGraphAddName(b, graph_name)
        subgraphs = _vector(b, [tflite.SubGraphEnd(b)])
        description = b.CreateString("fine-grained-mobilenet references/tiny_tflite.py")
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, vectors["c"])
        tflite.ModelAddSubgraphs(b, subgraphs)
        tflite.ModelAddDescription(b, description)
        tflite.ModelAddBuffers(b, vectors["b"])
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


def _vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _conv_options(stride: int, activation: int, depthwise: bool):
    def build(b: flatbuffers.Builder) -> int:
        prefix = "DepthwiseConv2DOptions" if depthwise else "Conv2DOptions"
        getattr(tflite, f"{prefix}Start")(b)
        getattr(tflite, f"{prefix}AddPadding")(b, tflite.Padding.SAME)
        getattr(tflite, f"{prefix}AddStrideW")(b, stride)
        getattr(tflite, f"{prefix}AddStrideH")(b, stride)
        if depthwise:
            tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, 1)
        getattr(tflite, f"{prefix}AddFusedActivationFunction")(b, activation)
        return getattr(tflite, f"{prefix}End")(b)

    return build


def write_mobilenet_tflite(
    path: str | Path, arch: str, width: float, resolution: int, classes: int, seed: int = 0
) -> Path:
    """A float32 MobileNet `arch` at `width` and `resolution` with a `classes`-way head, written to `path`."""
    rng = np.random.default_rng(seed)
    w = _Writer()
    size, channels = resolution, 3
    current = w.tensor("input", [1, size, size, 3])
    for block in create_model(arch, width_mult=width, num_classes=0).features:
        block_input = current
        units = [block] if isinstance(block, ConvBNAct) else [m for m in block.modules() if isinstance(m, ConvBNAct)]
        for unit in units:
            conv = unit.conv
            out_ch, kernel, stride = conv.out_channels, conv.kernel_size[0], conv.stride[0]
            depthwise = conv.groups > 1
            fan_in = kernel * kernel * (1 if depthwise else channels)
            shape = [1, kernel, kernel, out_ch] if depthwise else [out_ch, kernel, kernel, channels]
            weights = w.tensor(f"w{len(w.tensors)}", shape, rng.normal(0, (2 / fan_in) ** 0.5, shape))
            bias = w.tensor(f"b{len(w.tensors)}", [out_ch], rng.uniform(-0.1, 0.1, out_ch))
            size = -(-size // stride)
            out = w.tensor(f"x{len(w.tensors)}", [1, size, size, out_ch])
            activation = NONE if isinstance(unit.act, nn.Identity) else RELU6
            code = tflite.BuiltinOperator.DEPTHWISE_CONV_2D if depthwise else tflite.BuiltinOperator.CONV_2D
            options_type = (
                tflite.BuiltinOptions.DepthwiseConv2DOptions if depthwise else tflite.BuiltinOptions.Conv2DOptions
            )
            w.op(code, [current, weights, bias], [out], options_type, _conv_options(stride, activation, depthwise))
            current, channels = out, out_ch
        if getattr(block, "use_residual", False):
            added = w.tensor(f"x{len(w.tensors)}", [1, size, size, channels])
            w.op(
                tflite.BuiltinOperator.ADD,
                [block_input, current],
                [added],
                tflite.BuiltinOptions.AddOptions,
                _add_options,
            )
            current = added
    pooled = w.tensor("pooled", [1, 1, 1, channels])
    w.op(
        tflite.BuiltinOperator.AVERAGE_POOL_2D,
        [current],
        [pooled],
        tflite.BuiltinOptions.Pool2DOptions,
        _pool_options(size),
    )
    head_shape = [classes, 1, 1, channels]
    head = w.tensor("logits_w", head_shape, rng.normal(0, channels**-0.5, head_shape))
    head_bias = w.tensor("logits_b", [classes], rng.uniform(-0.1, 0.1, classes))
    logits4 = w.tensor("logits4", [1, 1, 1, classes])
    w.op(
        tflite.BuiltinOperator.CONV_2D,
        [pooled, head, head_bias],
        [logits4],
        tflite.BuiltinOptions.Conv2DOptions,
        _conv_options(1, NONE, False),
    )
    logits = w.tensor("logits", [1, classes])
    w.op(
        tflite.BuiltinOperator.RESHAPE,
        [logits4],
        [logits],
        tflite.BuiltinOptions.ReshapeOptions,
        _reshape_options(classes),
    )
    probabilities = w.tensor("probabilities", [1, classes])
    w.op(
        tflite.BuiltinOperator.SOFTMAX,
        [logits],
        [probabilities],
        tflite.BuiltinOptions.SoftmaxOptions,
        _softmax_options,
    )
    path = Path(path)
    path.write_bytes(w.finish([0], [probabilities]))
    return path


def _add_options(b: flatbuffers.Builder) -> int:
    tflite.AddOptionsStart(b)
    tflite.AddOptionsAddFusedActivationFunction(b, NONE)
    return tflite.AddOptionsEnd(b)


def _pool_options(size: int):
    def build(b: flatbuffers.Builder) -> int:
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, tflite.Padding.VALID)
        tflite.Pool2DOptionsAddStrideW(b, 1)
        tflite.Pool2DOptionsAddStrideH(b, 1)
        tflite.Pool2DOptionsAddFilterWidth(b, size)
        tflite.Pool2DOptionsAddFilterHeight(b, size)
        tflite.Pool2DOptionsAddFusedActivationFunction(b, NONE)
        return tflite.Pool2DOptionsEnd(b)

    return build


def _reshape_options(classes: int):
    def build(b: flatbuffers.Builder) -> int:
        shape = b.CreateNumpyVector(np.array([1, classes], dtype=np.int32))
        tflite.ReshapeOptionsStart(b)
        tflite.ReshapeOptionsAddNewShape(b, shape)
        return tflite.ReshapeOptionsEnd(b)

    return build


def _softmax_options(b: flatbuffers.Builder) -> int:
    tflite.SoftmaxOptionsStart(b)
    tflite.SoftmaxOptionsAddBeta(b, 1.0)
    return tflite.SoftmaxOptionsEnd(b)
