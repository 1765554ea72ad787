"""The V1-versus-V2 study, on equal footing: `python -m bench.study` (cub20, resumable; about 1.5 h on 2 cores), or
on the full CUB-200-2011: `python -m bench.study --data-root DIR/CUB_200_2011 --name v1_vs_v2_cub200 --epochs 5`.

Every row is trained by `train.py` itself, on the same data, with the same seed (0) and validation split
(`--val-fraction 0.1`), and evaluated the same way (one plain pass at the training resolution):

- from Google's ImageNet files (`../shared/weights`): V1 1.0/224 (the embedding-extractor file, no
  classifier), V1 0.75/192, 0.5/160, 0.25/128 and V2 1.0/224, all with the fine-tuning recipe;
- from scratch: V1 1.0/224 and V2 1.0/224, with the from-scratch recipe for the same epochs (`--epochs`).

For each row: test top-1/top-5 of `best.pt` (chosen on validation), parameters, MACs (fvcore), CPU latency
of the BN-folded fp32 fast path and of int8 (PT2E, compiled) at batch 1 and 32 (median of interleaved
rounds), weight bytes fp32/int8, training seconds (the sum of the epochs' training time), and against the row
above it the exact McNemar test on the same test images (which images one model gets right and the other
wrong: `evaluation.metrics.paired_test`). A finished
row (`RUNS/NAME/row.json`) is not recomputed; an interrupted training resumes from its `last.pt`;
`--remeasure` measures again, without training, the rows whose latency spread was over 25%.
Writes `bench/studies/NAME.{json,md}` and three plots `NAME_accuracy_vs_{macs,latency,params}.png` (top-1
against each, with each architecture's Pareto front; cub20's keep their first names).
"""

import json
from pathlib import Path

import torch

import cli
from atomicfile import write_atomically
from bench.harness import markdown_table, study_inputs, study_parser, train_run, write_study
from cli import positive_int
from evaluation.metrics import paired_test
from evaluation.plots import plot_pareto
from evaluation.timing import interleaved
from mobilenet import load_checkpoint, optimize_for_inference
from mobilenet.flops import count_macs
from training.config import RunConfig

# arch, width, resolution, Google file (None: from scratch)
ROWS = [
    ("v1", 1.0, 224, "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"),
    ("v1", 0.75, 192, "mobilenet_v1_0.75_192_quant.tflite"),
    ("v1", 0.5, 160, "mobilenet_v1_0.5_160_quant.tflite"),
    ("v1", 0.25, 128, "mobilenet_v1_0.25_128_quant.tflite"),
    ("v2", 1.0, 224, "mobilenet_v2_1.0_224_quant.tflite"),
    ("v1", 1.0, 224, None),
    ("v2", 1.0, 224, None),
]
EPOCHS = 10  # every row on cub20: the recipes over 10 epochs (the study fits about an hour on 2 cores)


def train_row(
    arch: str, width: float, resolution: int, weights: Path | None, data_root: Path, run: Path, epochs: int
) -> None:
    """`python train.py ...` for one row (one plain pass, as every row was measured)."""
    flags = ["--seed", "0", "--epochs", str(epochs), "--val-fraction", "0.1", "--no-test-hflip", "--no-look-twice"]
    if weights is not None:
        flags += ["--pretrained", str(weights)]
    else:
        flags += ["--arch", arch, "--width", str(width), "--resolution", str(resolution)]
    train_run(run, data_root, flags)


@torch.inference_mode()
def test_accuracy(model: torch.nn.Module, dataset) -> tuple[float, float, str]:
    """Top-1, top-5, and per test image (in the dataset's order) whether the top-1 is right, as "1"/"0"."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=2)
    top5 = count = 0
    right = []
    for images, labels in loader:
        logits = model(images)
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        right += (ranked[:, 0] == labels).tolist()
        top5 += int((ranked == labels[:, None]).any(1).sum())
        count += len(labels)
    return sum(right) / count, top5 / count, "".join("1" if r else "0" for r in right)


def latencies(variants: dict, resolution: int, rounds: int) -> dict:
    """Median ms per call of each variant at batch 1 and 32, measured interleaved (A B A B ...) after warm-up."""
    inputs = {batch: torch.randn(batch, 3, resolution, resolution) for batch in (1, 32)}
    contenders = {
        f"{name}_batch{batch}": (lambda fn=fn, x=x: fn(x))
        for name, fn in variants.items()
        for batch, x in inputs.items()
    }
    with torch.inference_mode():  # two warm-up calls each: compiled variants compile on their first calls
        timed = interleaved(contenders, rounds, warmup=2)
    return {key: 1000 * t.median for key, t in timed.items()} | {f"{key}_spread": t.spread for key, t in timed.items()}


def measure_row(run: Path, rounds: int) -> dict:
    from deploy.quantize import compile_for_cpu, quantize_int8, sample_tensors, weight_bytes

    model, card, info = load_checkpoint(run / "best.pt")
    run_config = RunConfig.of_checkpoint(info)
    resolution = card.resolution
    one_pass = card.one_pass().transform()  # every row was measured with one plain pass
    top1, top5, right = test_accuracy(model, run_config.dataset("test", one_pass))
    calibration, _ = sample_tensors(run_config.dataset("train", one_pass), 64)
    fast = optimize_for_inference(model, channels_last=True)
    int8 = quantize_int8(model, list(calibration.split(32)))
    timed = latencies({"fp32": fast, "int8": compile_for_cpu(int8)}, resolution, rounds)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "test_images": len(right),
        "classes": len(card.class_names),
        "test_right": right,
        "top1": top1,
        "top5": top5,
        "best_epoch": torch.load(run / "best.pt", weights_only=True)["epoch"],
        "params": sum(p.numel() for p in model.parameters()),
        "macs": count_macs(model, resolution)[0],
        "latency_ms": timed["fp32_batch1"],
        "latency_ms_batch32": timed["fp32_batch32"],
        "int8_latency_ms": timed["int8_batch1"],
        "int8_latency_ms_batch32": timed["int8_batch32"],
        "latency_spread": max(v for k, v in timed.items() if k.endswith("_spread")),
        "weights_mb": weight_bytes(fast) / 1e6,
        "int8_weights_mb": weight_bytes(int8) / 1e6,
        "train_seconds": sum(r["seconds"] for r in rows),
        "threads": torch.get_num_threads(),
    }


def against_previous(rows: list[dict]) -> list[str]:
    """Per row, the McNemar test against the row above: "+gained/-lost, p" (rows measured before the study
    recorded per-image answers: "n/a")."""
    cells = [""]
    for above, row in zip(rows, rows[1:]):
        if "test_right" not in above or "test_right" not in row:
            cells.append("n/a")
            continue
        test = paired_test([c == "1" for c in above["test_right"]], [c == "1" for c in row["test_right"]])
        cells.append(f"+{test['gained']}/-{test['lost']}, p = {test['p']:.2g}")
    return cells


def table(rows: list[dict]) -> str:
    header = ["model", "start", "top-1", "top-5", "params", "MACs", "fp32 ms (b1 / b32)", "int8 ms (b1 / b32)"]
    header += ["weights MB (fp32 / int8)", "training", "against the row above (McNemar)"]
    cells = [
        [r["label"], "ImageNet" if r["pretrained"] else "scratch", f"{r['top1']:.2%}", f"{r['top5']:.2%}"]
        + [f"{r['params']:,}", f"{r['macs'] / 1e6:.1f}M", f"{r['latency_ms']:.1f} / {r['latency_ms_batch32']:.0f}"]
        + [f"{r['int8_latency_ms']:.1f} / {r['int8_latency_ms_batch32']:.0f}"]
        + [f"{r['weights_mb']:.2f} / {r['int8_weights_mb']:.2f}", f"{r['train_seconds'] / 60:.1f} min", paired]
        for r, paired in zip(rows, against_previous(rows))
    ]
    return markdown_table(header, "llrrrrrrrrl", cells)


def write_results(rows: list[dict], out: Path, name: str, command: str) -> None:
    title = f"# MobileNet V1 versus V2 on {rows[0]['classes']} species (`{command}`)\n\n"
    write_study(out, name, rows, title + table(rows))
    prefix = "" if name == "v1_vs_v2_cub20" else f"{name}_"
    for key, label, picture in (
        ("macs_m", "multiply-adds (millions)", "accuracy_vs_macs.png"),
        ("latency_ms", "CPU latency, fp32 fast path, batch 1 (ms)", "accuracy_vs_latency.png"),
        ("params_m", "parameters (millions)", "accuracy_vs_params.png"),
    ):
        plot_pareto(rows, key, label, out / f"{prefix}{picture}", chance=1 / rows[0]["classes"])


def main(argv: list[str] | None = None) -> list[dict]:
    p = study_parser("The V1-versus-V2 study (resumable).", "study")
    p.add_argument("--name", default="v1_vs_v2_cub20", help="result files' name (default: v1_vs_v2_cub20)")
    p.add_argument("--epochs", type=positive_int, default=EPOCHS, help=f"every row's epochs (default: {EPOCHS})")
    p.add_argument("--rounds", type=positive_int, default=20, help="interleaved timing rounds (default: 20)")
    p.add_argument(
        "--remeasure",
        action="store_true",
        help="measure again, without training, the finished rows whose latency spread was over 25%% (a busy machine)",
    )
    args = p.parse_args(argv)
    data_root, weights = study_inputs(args, "bench.study")
    rows = []
    for arch, width, resolution, file in ROWS:
        name = f"{arch}-{width:g}-{resolution}-{'imagenet' if file else 'scratch'}"
        run = Path(args.runs) / name
        done = run / "row.json"
        noisy = done.is_file() and json.loads(done.read_text())["latency_spread"] > 0.25
        if not done.is_file() or (args.remeasure and noisy and (run / "best.pt").is_file()):
            if not (run / "best.pt").is_file() or not args.remeasure:
                train_row(arch, width, resolution, weights / file if file else None, data_root, run, args.epochs)
            row = dict(arch=arch, width=width, resolution=resolution, pretrained=file is not None, name=name)
            row.update(
                measure_row(run, args.rounds),
                label=f"{arch.upper()} {width:g}/{resolution}" + ("" if file else " scratch"),
            )
            row.update(macs_m=row["macs"] / 1e6, params_m=row["params"] / 1e6, source=file or "scratch")
            write_atomically(done, json.dumps(row, indent=2))
        rows.append(json.loads(done.read_text()))
        print(f"{name}: top-1 {rows[-1]['top1']:.2%}", flush=True)
    command = "python -m bench.study" + ("" if args.name == "v1_vs_v2_cub20" else f" --name {args.name}")
    command += "" if args.epochs == EPOCHS else f" --epochs {args.epochs}"
    write_results(rows, Path(args.out), args.name, command)
    print(table(rows))
    return rows


if __name__ == "__main__":
    cli.run("bench.study", main)
