"""Int8 post-training static quantization for CPUs, and the fp32-versus-int8 report.

PyTorch's current flow (PT2E, torchao): `torch.export` the BN-folded model, `prepare_pt2e` with the
`X86InductorQuantizer` (int8 activations per tensor, int8 weights per output channel, the oneDNN recipe),
run calibration images through it so the observers see real activation ranges, `convert_pt2e`, then
`torch.compile` with Inductor's freezing, which turns the quantize/dequantize pairs around each
convolution into oneDNN int8 convolutions. For ARM CPUs the same code takes torchao's ARM quantizer or
ExecuTorch's XNNPACK quantizer in place of the x86 one.

    python -m deploy.quantize --checkpoint runs/cub20-v2-finetune/best.pt [--data-root ...]

prints the weights' size, latency at batch 1 and 32 and test top-1 of the fp32 model (eager fast path and
compiled) against the int8 model, all measured in the same process, for one plain pass at the training
resolution (the network itself; a run's flip averaging or look-twice multiply its passes, see mobilenet.tta).
"""

import argparse
import json
import warnings
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from atomicfile import write_atomically
from cli import positive_int, run
from data.loaders import SizedDataset
from deploy.requirements import require
from evaluation.timing import median_seconds
from mobilenet import load_checkpoint, optimize_for_inference
from mobilenet.checkpoint import refuse_overwrite
from mobilenet.inference import bake_same_padding
from mobilenet.tta import Inference
from training.view import RunView


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


def report(checkpoint: str, data_root: str | None = None, *, calibration_images: int = 256, rounds: int = 10) -> dict:
    """fp32 (eager fast path, compiled) against int8 (compiled): size, latency at batch 1 and 32, test top-1."""
    model, info = load_checkpoint(checkpoint)
    view = RunView.of_checkpoint(info)
    root = view.data_root(data_root)
    one_pass = view.eval_transform(view.train_resolution)  # int8 is timed and scored on one plain pass
    train_x, _ = sample_tensors(view.dataset("train", one_pass, data_root=root), calibration_images)
    test_x, test_y = sample_tensors(view.dataset("test", one_pass, data_root=root))
    int8 = quantize_int8(model, list(train_x.split(32)))
    variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "fp32 eager (BN folded, channels_last)": optimize_for_inference(model),
        "fp32 compiled": compile_for_cpu(optimize_for_inference(model, channels_last=False)),
        "int8 compiled": compile_for_cpu(int8),
    }
    sizes = {"fp32": weight_bytes(optimize_for_inference(model)), "int8": weight_bytes(int8)}
    rows = []
    for name, variant in variants.items():
        with warnings.catch_warnings(), torch.inference_mode():  # torch's own notices while compiling
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            row = {
                "model": name,
                "size_mb": sizes["int8" if name.startswith("int8") else "fp32"] / 1e6,
                "latency_ms_batch1": 1000 * median_seconds(partial(variant, test_x[:1]), rounds, warmup=1),
                "latency_ms_batch32": 1000 * median_seconds(partial(variant, test_x[:32]), rounds, warmup=1),
                "top1": top1(variant, test_x, test_y),
            }
        rows.append(row)
    return {
        "checkpoint": checkpoint,
        "inference": Inference(view.train_resolution).describe(),
        "run_inference": view.inference.describe(),
        "data_root": str(root),
        "test_images": len(test_x),
        "calibration_images": len(train_x),
        "threads": torch.get_num_threads(),
        "rows": rows,
    }


def format_report(result: dict) -> str:
    rows = result["rows"]
    base = rows[0]
    lines = [
        f"{result['checkpoint']} on {result['data_root']} ({result['test_images']} test images, "
        f"{result['calibration_images']} calibration images, {result['threads']} threads)",
        f"each model: one pass, {result['inference']} (the run's own test-time inference: {result['run_inference']};"
        " its extra passes cost the same again each)",
        "| model | weights (MB) | batch 1 (ms) | batch 32 (ms) | speed-up at 32 vs fp32 eager | top-1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size_mb']:.2f} | {r['latency_ms_batch1']:.1f} | {r['latency_ms_batch32']:.1f} | "
            f"{base['latency_ms_batch32'] / r['latency_ms_batch32']:.2f}x | {r['top1']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description="Int8 post-training quantization: fp32 versus int8 on CPU.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py")
    p.add_argument("--data-root", default=None, help="CUB root (default: the one the run trained on)")
    p.add_argument(
        "--calibration-images", type=positive_int, default=256, help="training images to calibrate on (default: 256)"
    )
    p.add_argument("--rounds", type=positive_int, default=10, help="timed rounds per measurement, median (default: 10)")
    p.add_argument("--json", default=None, help="also write the result to this JSON file")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    args = p.parse_args(argv)
    require("torchao", purpose="int8 quantization (PT2E)")
    if args.json:
        refuse_overwrite(args.json, args.force)
    result = report(args.checkpoint, args.data_root, calibration_images=args.calibration_images, rounds=args.rounds)
    print(format_report(result))
    if args.json:
        write_atomically(args.json, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    run("deploy.quantize", main)
