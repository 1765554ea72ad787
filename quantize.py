"""Int8 post-training quantization of a trained checkpoint: fp32 against int8 on this CPU.

    python quantize.py --checkpoint runs/cub20-v2-finetune/best.pt [--data-root ...] [--json FILE]

prints the weights' size, latency at batch 1 and 32 and test top-1 of the fp32 model (eager fast path and
compiled) against the int8 model (`deploy.quantize`: PT2E with the x86 quantizer), all measured in the same
process, for one plain pass at the training resolution (the network itself; a run's flip averaging or
look-twice multiply its passes, see mobilenet.tta). Calibration images come from the run's training split.
"""

import argparse
import json
import warnings
from collections.abc import Callable
from functools import partial

import torch

from atomicfile import write_atomically
from cli import positive_int, run
from deploy.quantize import compile_for_cpu, quantize_int8, sample_tensors, top1, weight_bytes
from deploy.requirements import require
from evaluation.timing import median_seconds
from mobilenet import load_checkpoint, optimize_for_inference
from mobilenet.checkpoint import refuse_overwrite
from training.config import RunConfig


def report(checkpoint: str, data_root: str | None = None, *, calibration_images: int = 256, rounds: int = 10) -> dict:
    """fp32 (eager fast path, compiled) against int8 (compiled): size, latency at batch 1 and 32, test top-1."""
    model, card, info = load_checkpoint(checkpoint)
    run_config = RunConfig.of_checkpoint(info)
    root = run_config.data_root_here(data_root)
    one_pass = card.one_pass()  # int8 is timed and scored on one plain pass at the training resolution
    train_x, _ = sample_tensors(run_config.dataset("train", one_pass.transform(), data_root=root), calibration_images)
    test_x, test_y = sample_tensors(run_config.dataset("test", one_pass.transform(), data_root=root))
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
        "inference": one_pass.inference.describe(),
        "run_inference": card.inference.describe(),
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
    run("quantize.py", main)
