"""A float reference executor for MobileNet .tflite graphs, independent of `mobilenet/` and `layers/`.

It runs the graph op by op as TFLite defines the ops (NHWC tensors, "SAME" padding computed from the
TFLite rule, fused activations), with weights dequantized as (q - zero_point) * scale and float64
activations; no quantization of activations. Used by the tests as a second implementation.
"""

import numpy as np
import tflite
import torch
import torch.nn.functional as F

NAMES = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
NUMPY = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 9: np.int8}


def _tensor_value(model, graph, index, data):
    t = graph.Tensors(index)
    buf = model.Buffers(t.Buffer())
    if buf.DataLength() == 0:
        return None
    arr = buf.DataAsNumpy().view(NUMPY[t.Type()]).reshape(t.ShapeAsNumpy()).astype(np.float64)
    q = t.Quantization()
    if q is not None and q.ScaleLength() and t.Type() in (2, 3, 9):
        scale, zp = q.ScaleAsNumpy().astype(np.float64), q.ZeroPointAsNumpy().astype(np.float64)
        if q.ScaleLength() > 1:
            shape = [1] * arr.ndim
            shape[q.QuantizedDimension()] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        arr = (arr - zp) * scale
    return arr


def _same_pad(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _activate(x, code):
    return {0: x, 1: x.clamp_min(0), 3: x.clamp(0, 6)}[code]


def run_reference(path, pixels: np.ndarray) -> np.ndarray:
    """Run the graph in float on uint8 NHWC `pixels` (the file's input quantization gives the scaling).

    Returns the tensor that feeds the final SOFTMAX (the logits), or the graph output if there is none.
    """
    with open(path, "rb") as f:
        data = f.read()
    model = tflite.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    values: dict[int, torch.Tensor] = {}
    inp = int(graph.InputsAsNumpy()[0])
    q = graph.Tensors(inp).Quantization()
    scale, zp = float(q.ScaleAsNumpy()[0]), float(q.ZeroPointAsNumpy()[0])
    values[inp] = torch.from_numpy((pixels.astype(np.float64) - zp) * scale)
    result = None
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = NAMES[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        ins = [int(t) for t in op.InputsAsNumpy()]
        out = int(op.OutputsAsNumpy()[0])

        def get(t):
            if t not in values:
                values[t] = torch.from_numpy(_tensor_value(model, graph, t, data))
            return values[t]

        table = op.BuiltinOptions()
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            opts = tflite.Conv2DOptions() if name == "CONV_2D" else tflite.DepthwiseConv2DOptions()
            opts.Init(table.Bytes, table.Pos)
            x = get(ins[0]).permute(0, 3, 1, 2)  # NCHW for torch
            w = get(ins[1])
            if name == "CONV_2D":
                w, groups = w.permute(0, 3, 1, 2), 1
            else:
                w, groups = w.permute(3, 0, 1, 2), x.shape[1]
            s = opts.StrideH()
            if opts.Padding() == tflite.Padding.SAME:
                top, bottom = _same_pad(x.shape[2], w.shape[2], s)
                left, right = _same_pad(x.shape[3], w.shape[3], s)
                x = F.pad(x, (left, right, top, bottom))
            y = F.conv2d(x, w, get(ins[2]), stride=s, groups=groups)
            values[out] = _activate(y, opts.FusedActivationFunction()).permute(0, 2, 3, 1)
        elif name == "ADD":
            values[out] = get(ins[0]) + get(ins[1])
        elif name == "AVERAGE_POOL_2D":
            values[out] = get(ins[0]).mean((1, 2), keepdim=True)
        elif name == "RESHAPE":
            values[out] = get(ins[0]).reshape(tuple(int(d) for d in graph.Tensors(out).ShapeAsNumpy()))
        elif name == "SOFTMAX":
            result = get(ins[0])
            values[out] = result.softmax(-1)
        else:
            raise NotImplementedError(name)
    if result is None:
        result = values[int(graph.OutputsAsNumpy()[0])]
    return result.reshape(result.shape[0], -1).numpy()
