"""Int8 post-training static quantization for CPUs (the fp32-versus-int8 report: `quantize.py`).

PyTorch's current flow (PT2E, torchao): `torch.export` the BN-folded model, `prepare_pt2e` with the
`X86InductorQuantizer` (int8 activations per tensor, int8 weights per output channel, the oneDNN recipe),
run calibration images through it so the observers see real activation ranges, `convert_pt2e`, then
`torch.compile` with Inductor's freezing, which turns the quantize/dequantize pairs around each
convolution into oneDNN int8 convolutions. For ARM CPUs the same code takes torchao's ARM quantizer or
ExecuTorch's XNNPACK quantizer in place of the x86 one.
"""

import warnings
from collections.abc import Callable

import torch
from torch import nn

from data.loaders import SizedDataset
from mobilenet.inference import bake_same_padding, optimize_for_inference


def quantize_int8(model: nn.Module, calibration: list[torch.Tensor]) -> nn.Module:
    """The PT2E-quantized (int8) version of eval-mode `model`, calibrated on the batches in `calibration`.

    BN is folded and TensorFlow-"SAME" padding baked in for the calibration images' size, so that every
    convolution is one the x86 quantizer recognises. The result is for that input size (any batch).

    The result runs the quantize/dequantize reference graph; `compile_for_cpu` makes it fast.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86

    example = calibration[0][:2]
    folded = bake_same_padding(optimize_for_inference(model, channels_last=False), example.shape[-1])
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        graph = torch.export.export(folded, (example,), dynamic_shapes=({0: batch},)).module()
        quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for images in calibration:
                prepared(images)
        return convert_pt2e(prepared)


def compile_for_cpu(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """`torch.compile` with Inductor freezing (weights become constants; int8 patterns become oneDNN kernels)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    return torch.compile(model, dynamic=False)


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights as the model stores them: parameters and buffers, or for a converted PT2E graph
    its constants (int8 weights with their per-channel scales and zero points, fp32 biases)."""
    if isinstance(model, torch.fx.GraphModule) and any(n.op == "get_attr" for n in model.graph.nodes):
        tensors = {n.target: _attribute(model, n.target) for n in model.graph.nodes if n.op == "get_attr"}
        return sum(t.numel() * t.element_size() for t in tensors.values() if isinstance(t, torch.Tensor))
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _attribute(module: nn.Module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def top1(
    model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor, batch_size: int = 32
) -> float:
    with torch.inference_mode():
        predictions = torch.cat(
            [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
        )
    return (predictions == labels).double().mean().item()


def sample_tensors(dataset: SizedDataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`limit` items spread evenly over `dataset` (all when None), stacked: (images, labels)."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    step = max(1, len(dataset) // count)
    indices = list(range(0, len(dataset), step))[:count]
    items = [dataset[i] for i in indices]
    return torch.stack([image for image, _ in items]), torch.tensor([label for _, label in items])
