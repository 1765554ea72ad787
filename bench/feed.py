"""How busy `train.py` keeps the device: `python -m bench.feed` (CPU or GPU; minutes on 2 CPU cores).

For each resolution, in one run: model-only training images/s (V2 1.0, 200-way head, random batches already on
the device, the precision `train.py` picks there: channels_last on CPU and CUDA, bf16 autocast on CUDA; and
with bf16 autocast for comparison) and `train.py`'s own training images/s for one epoch at the same batch,
precision and resolution, through the DataLoader (`--no-device-pipeline`) and through `--device-pipeline` (the
default with `--cache`), each repeated `--repeats` times in alternation with the model-only figures; it prints
and writes the medians' ratios to model-only, and device pipeline to loader, with every run. `train.py`'s figure
is its epoch row's `images_per_s`: training steps only, the cache build and evaluation excluded. On the full
set: `--data-root DIR/CUB_200_2011 --classes 1-200`.
"""

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import cli
import train
from atomicfile import write_atomically
from bench.harness import study_inputs, study_parser
from cli import nonnegative_int, positive_int
from mobilenet import create_model
from training.config import RunConfig, precision
from training.runtime import select_device


def model_only(device: torch.device, resolution: int, batch: int, steps: int, amp: str | None = None) -> float:
    """Training images/s of the model alone on random batches already on `device`, in `train.py`'s default
    precision there or with autocast to `amp`."""
    default_amp, channels_last = precision(RunConfig(), device.type)
    amp = amp or default_amp
    model = create_model("v2", num_classes=200).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, resolution, resolution, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 200, (batch,), device=device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp, torch.float32)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=amp != "none"):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def train_py(data_root: Path, resolution: int, batch: int, flags: list[str]) -> float:
    """`train.py`'s training images/s over one epoch (V2 1.0 from scratch, the given flags)."""
    with tempfile.TemporaryDirectory() as out:
        args = ["--data-root", str(data_root), "--out", out, "--force", "--epochs", "1", "--no-progress"]
        args += ["--resolution", str(resolution), "--batch-size", str(batch), "--cache", "--val-fraction", "0"]
        return train.main([*args, *flags])["images_per_s"]


def main(argv: list[str] | None = None) -> dict:
    p = study_parser("How busy train.py keeps the device: model-only against train.py images/s.", "feed")
    p.add_argument("--resolutions", type=positive_int, nargs="+", default=[224], help="input sizes (default: 224)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per step (default: 32; 256 on a GPU)")
    p.add_argument("--classes", default="1-20", help="classes to train on (default: 1-20; 1-200 on the full set)")
    p.add_argument(
        "--workers", type=nonnegative_int, default=2, help="loader processes for the loader path (default: 2)"
    )
    p.add_argument("--repeats", type=positive_int, default=2, help="alternating train.py runs per path (default: 2)")
    p.add_argument("--steps", type=positive_int, default=10, help="model-only timed steps (default: 10)")
    args = p.parse_args(argv)
    data_root, _ = study_inputs(args, "bench.feed")
    device = select_device("auto")
    common = ["--classes", args.classes, "--workers", str(args.workers)]
    rows = []
    for resolution in args.resolutions:
        runs: dict[str, list[float]] = {"loader": [], "device pipeline": [], "model only": [], "model only bf16": []}
        for _ in range(args.repeats):  # interleaved, so that a busy spell of the machine spreads over all four
            runs["loader"].append(train_py(data_root, resolution, args.batch_size, [*common, "--no-device-pipeline"]))
            runs["device pipeline"].append(
                train_py(data_root, resolution, args.batch_size, [*common, "--device-pipeline"])
            )
            runs["model only"].append(model_only(device, resolution, args.batch_size, args.steps))
            if device.type == "cuda" or torch.backends.mkldnn.is_available():
                runs["model only bf16"].append(model_only(device, resolution, args.batch_size, args.steps, "bf16"))
        alone, loader, on_device = (statistics.median(runs[k]) for k in ("model only", "loader", "device pipeline"))
        bf16 = statistics.median(runs["model only bf16"]) if runs["model only bf16"] else None
        rows.append(
            dict(
                resolution=resolution,
                batch=args.batch_size,
                model_only=alone,
                model_only_bf16=bf16,
                loader=loader,
                device_pipeline=on_device,
                runs=runs,
                loader_share=loader / alone,
                device_pipeline_share=on_device / alone,
                device_over_loader=on_device / loader,
            )
        )
    amp, channels_last = precision(RunConfig(), device.type)
    result = dict(device=str(device), amp=amp, channels_last=channels_last, threads=torch.get_num_threads(), rows=rows)
    lines = [f"device {device}, amp {amp}, channels_last {channels_last}, {torch.get_num_threads()} threads"]
    for r in rows:
        lines.append(
            f"{r['resolution']} px, batch {r['batch']}: model only {r['model_only']:.1f} img/s; train.py loader "
            f"{r['loader']:.1f} ({r['loader_share']:.0%}), device pipeline {r['device_pipeline']:.1f} "
            f"({r['device_pipeline_share']:.0%}); device pipeline / loader {r['device_over_loader']:.2f}x"
            + (f"; model only with bf16 autocast {r['model_only_bf16']:.1f} img/s" if r["model_only_bf16"] else "")
        )
        lines.append(
            "  runs (img/s): " + "; ".join(f"{k} {', '.join(f'{v:.1f}' for v in r['runs'][k])}" for k in r["runs"])
        )
    print("\n".join(lines))
    out = Path(args.out) / f"feed_{device.type}.json"
    write_atomically(out, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    cli.run("bench.feed", main)
