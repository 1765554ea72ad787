"""Evaluate a trained checkpoint: metrics, pictures, cost and speed; or compare several (V1 versus V2).

    python evaluate.py --checkpoint runs/NAME/best.pt [--data-root DIR] [--split test] [--out DIR]
    python evaluate.py --compare runs/A/best.pt runs/B/best.pt ... [--out DIR]

Writes `metrics.json` (top-1, top-5, mean per-class accuracy, per-class table, confusion matrix, most
confused pairs, NLL, ECE over 15 bins, parameters, MACs, images/s) and PNGs: confusion matrix, per-class
accuracy, reliability diagram, misclassified gallery, most-confused pairs side by side, training curves
(from the run's metrics.jsonl) and Grad-CAM. Architecture, class names and normalization come from the
checkpoint. Test-time views: `center` (resize to resolution / 0.875, centre crop; the default), `full` (the
whole image resized), `bbox` (the bounding-box crop resized). By default the run's own test-time inference
(`mobilenet.tta`: test resolution, flip averaging, look-twice) is applied; `--test-resolution`,
`--[no-]test-hflip` and `--[no-]look-twice` (train.py's names) override it for ablations.
"""

import argparse
import json
from functools import partial
from pathlib import Path

import numpy as np
import torch

from atomicfile import atomic_folder, write_atomically
from cli import UsageError, nonnegative_int, positive_int, run
from data.cub import CUB200
from evaluation import plots
from evaluation.gradcam import grad_cam
from evaluation.metrics import classification_metrics
from evaluation.timing import median_seconds
from mobilenet.checkpoint import CheckpointError, load_checkpoint, refuse_overwrite
from mobilenet.flops import count_macs
from training.config import RunConfig
from training.runtime import select_device, tune_malloc

VIEWS = ("center", "full", "bbox")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--checkpoint", default=None, help="a checkpoint written by train.py")
    p.add_argument("--compare", nargs="+", default=None, metavar="CHECKPOINT", help="compare these checkpoints instead")
    p.add_argument("--data-root", default=None, help="CUB root (default: the one the run trained on)")
    p.add_argument(
        "--split",
        choices=["train", "val", "test"],
        default="test",
        help="which split to evaluate (val: the run's validation images)",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default: <checkpoint folder>/eval-<split>, or runs/compare)"
    )
    p.add_argument("--view", choices=VIEWS, default="center", help="test-time view of each image")
    p.add_argument(
        "--test-hflip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="average the logits with the mirrored image's (default: as the run's --test-hflip)",
    )
    p.add_argument(
        "--look-twice",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add a pass on the object cropped from the first pass's features (default: as the run's --look-twice)",
    )
    p.add_argument(
        "--test-resolution",
        type=positive_int,
        default=None,
        help="evaluate at this size (default: the run's test resolution, its resolution x --test-scale)",
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    p.add_argument("--workers", type=nonnegative_int, default=2, help="data-loading processes")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="device")
    p.add_argument("--gallery", type=nonnegative_int, default=12, help="misclassified images to show")
    p.add_argument("--gradcam", type=nonnegative_int, default=8, help="test images to show Grad-CAM on")
    p.add_argument(
        "--latency-rounds", type=positive_int, default=10, help="timed rounds for images/s and latency (median)"
    )
    p.add_argument("--no-plots", action="store_true", help="metrics only")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    return p


@torch.no_grad()
def predict(model, dataset, normalize, device, *, batch_size: int, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over `dataset` (uint8 images)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    all_logits, all_labels = [], []
    for images, labels in loader:
        logits = model(normalize(images.float().div_(255)).to(device))
        all_logits.append(logits.float().cpu())
        all_labels.append(labels)
    return torch.cat(all_logits), torch.cat(all_labels)


def measure_speed(model, resolution: int, device, *, batch_size: int, rounds: int) -> dict:
    """Median seconds per batch after warm-up; returns images/s at `batch_size` and batch-1 latency (ms)."""
    result = {}
    for batch in (1, batch_size):
        x = torch.randn(batch, 3, resolution, resolution, device=device)
        with torch.no_grad():
            median = median_seconds(partial(model, x), rounds, warmup=2, cuda=device.type == "cuda")
        result["latency_ms_batch1" if batch == 1 else "images_per_s"] = median * 1000 if batch == 1 else batch / median
    return result


def _display(dataset: CUB200, index: int) -> np.ndarray:
    return dataset[index][0].permute(1, 2, 0).numpy()


def evaluate_checkpoint(args: argparse.Namespace, checkpoint: str, out: Path | None, log=print) -> dict:
    model, card, info = load_checkpoint(checkpoint)
    device = select_device(args.device)
    model.to(device)
    card = card.with_inference(resolution=args.test_resolution, hflip=args.test_hflip, look_twice=args.look_twice)
    run_config = RunConfig.of_checkpoint(info)
    inference = card.inference
    resolution = inference.resolution
    crop = "bbox" if args.view == "bbox" else "none"
    pixels = card.transform(view="center" if args.view == "center" else "full", normalize=False)
    root = run_config.data_root_here(args.data_root)
    dataset = run_config.dataset(args.split, pixels, data_root=root, crop=crop)
    if len(dataset.class_names) != len(card.class_names):
        raise CheckpointError(
            f"{checkpoint}: trained on {len(card.class_names)} classes, but {root} ({args.split}) has {len(dataset.class_names)}"
        )
    normalize = card.normalize()
    applied = inference.wrap(model)
    logits, labels = predict(applied, dataset, normalize, device, batch_size=args.batch_size, workers=args.workers)
    metrics = classification_metrics(logits, labels, list(card.class_names))
    macs, _ = count_macs(applied, resolution)
    metrics.update(
        checkpoint=str(checkpoint),
        data_root=str(root),
        split=args.split,
        view=args.view,
        test_hflip=inference.hflip,
        look_twice=inference.look_twice,
        inference=inference.describe("centre" if args.view == "center" else args.view),
        resolution=resolution,
        arch=info["model_config"]["arch"],
        width=info["model_config"]["width_mult"],
        params=sum(p.numel() for p in model.parameters()),
        macs=macs,
        device=str(device),
        **measure_speed(applied, resolution, device, batch_size=args.batch_size, rounds=args.latency_rounds),
    )
    if out is None:
        return metrics
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "metrics.json", json.dumps(metrics, indent=2))
    if not args.no_plots:
        write_pictures(
            model,
            dataset,
            logits,
            labels,
            metrics,
            card,
            run_config,
            normalize,
            device,
            Path(checkpoint).parent,
            out,
            args,
        )
    return metrics


def write_pictures(
    model, dataset, logits, labels, metrics, card, run_config, normalize, device, run_dir: Path, out: Path, args
) -> None:
    names = list(card.class_names)
    plots.plot_confusion(metrics["confusion"], names, out / "confusion.png")
    plots.plot_per_class_accuracy(metrics["per_class"], out / "per_class_accuracy.png")
    plots.plot_reliability(metrics["calibration_bins"], metrics["ece"], out / "reliability.png")
    probabilities = logits.softmax(1)
    confidence, predicted = probabilities.max(1)
    wrong = (predicted != labels).nonzero().flatten()
    wrong = wrong[confidence[wrong].argsort(descending=True)][: args.gallery].tolist()
    gallery = [
        {
            "image": _display(dataset, i),
            "caption": f"true: {names[labels[i]][:24]}\npred: {names[predicted[i]][:24]} ({confidence[i]:.2f})",
        }
        for i in wrong
    ]
    plots.plot_gallery(gallery, out / "misclassified.png")
    first_of_class: dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        first_of_class.setdefault(label, i)
    index_of = {name: k for k, name in enumerate(names)}
    pairs = []
    for pair in metrics["most_confused"][:4]:
        t, p = index_of[pair["true"]], index_of[pair["predicted"]]
        example = next((i for i in wrong if labels[i] == t and predicted[i] == p), first_of_class.get(t))
        pairs.append(
            dict(
                pair,
                true_image=_display(dataset, example) if example is not None else None,
                predicted_image=_display(dataset, first_of_class[p]) if p in first_of_class else None,
            )
        )
    plots.plot_confused_pairs(pairs, out / "confused_pairs.png")
    metrics_file = run_dir / "metrics.jsonl"
    if metrics_file.exists():
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if "train_loss" in r]  # the start's row (epoch 0) trained nothing
        lrs = None  # the schedule of every step, from the run's record when the curve starts at epoch 1
        if rows and rows[0]["epoch"] == 1:
            lrs = run_config.lr_per_step(rows[0]["step"])
        if rows:
            plots.plot_training_curves(rows, out / "training_curves.png", lrs)
        else:
            print("no training curves: the run trained no epoch (--epochs 0)")
    if args.gradcam == 0:
        return
    step = max(1, len(dataset) // args.gradcam)
    picks = list(range(0, len(dataset), step))[: args.gradcam]
    images = torch.stack([dataset[i][0] for i in picks])
    cams, cam_logits = grad_cam(model, normalize(images.float() / 255).to(device))
    captions = [  # what the model said and what the bird is
        f"pred {names[int(k)][:22]}\ntrue {names[int(labels[i])][:22]}" for k, i in zip(cam_logits.argmax(1), picks)
    ]
    plots.plot_gradcam(
        [img.permute(1, 2, 0).numpy() for img in images], list(cams.cpu().numpy()), captions, out / "gradcam.png"
    )


def format_report(m: dict) -> str:
    lines = [
        f"{m['checkpoint']} on {m['data_root']} ({m['split']}, {m['count']} images, {m['inference']})",
        f"  top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f}  mean per-class {m['mean_class_accuracy']:.4f}  NLL {m['nll']:.4f}  ECE {m['ece']:.4f}",
        f"  MobileNet{m['arch'].upper()} width {m['width']:g}: {m['params']:,} parameters, {m['macs'] / 1e6:.1f}M MACs, "
        f"{m['images_per_s']:.1f} images/s, {m['latency_ms_batch1']:.1f} ms at batch 1 ({m['device']})",
        "  worst classes: "
        + ", ".join(
            f"{r['class']} {r['accuracy']:.2f}" for r in sorted(m["per_class"], key=lambda r: r["accuracy"])[:5]
        ),
        "  most confused: "
        + "; ".join(f"{p['true']} -> {p['predicted']} ({p['count']})" for p in m["most_confused"][:5]),
    ]
    return "\n".join(lines)


def compare(args: argparse.Namespace, out: Path) -> list[dict]:
    same_test_set(args.compare, args.data_root)
    rows = []
    for checkpoint in args.compare:
        m = evaluate_checkpoint(args, checkpoint, None)
        label = f"{m['arch']} {m['width']:g}/{m['resolution']}"
        rows.append(
            {
                "label": label,
                "checkpoint": checkpoint,
                "arch": m["arch"],
                "width": m["width"],
                "resolution": m["resolution"],
                "params": m["params"],
                "macs_m": m["macs"] / 1e6,
                "latency_ms": m["latency_ms_batch1"],
                "top1": m["top1"],
                "top5": m["top5"],
            }
        )
    header = "| model | checkpoint | params | MACs | CPU latency (batch 1) | top-1 | top-5 |\n|---|---|---:|---:|---:|---:|---:|"
    table = [header] + [
        f"| {r['label']} | {r['checkpoint']} | {r['params']:,} | {r['macs_m']:.1f}M | {r['latency_ms']:.1f} ms | {r['top1']:.4f} | {r['top5']:.4f} |"
        for r in rows
    ]
    with atomic_folder(out) as folder:
        write_atomically(folder / "compare.md", "\n".join(table) + "\n")
        write_atomically(folder / "compare.json", json.dumps(rows, indent=2))
        plots.plot_pareto(rows, "macs_m", "multiply-adds (millions)", folder / "accuracy_vs_macs.png")
        plots.plot_pareto(rows, "latency_ms", "CPU latency at batch 1 (ms)", folder / "accuracy_vs_latency.png")
    print("\n".join(table))
    return rows


def same_test_set(checkpoints: list[str], data_root: str | None) -> None:
    """UsageError unless every checkpoint is tested on one test set: the same classes, from the same root."""
    seen: dict[tuple, str] = {}
    for checkpoint in checkpoints:
        _, card, info = load_checkpoint(checkpoint)
        root = RunConfig.of_checkpoint(info).data_root_here(data_root).resolve()
        seen.setdefault((str(root), card.class_names), checkpoint)
        if len(seen) > 1:
            first = next(iter(seen.values()))
            raise UsageError(
                f"--compare: {first} and {checkpoint} were trained on different data (classes or CUB root): their "
                "test sets differ, so one table would rank them unfairly; compare runs of one data set"
            )


def main(argv: list[str] | None = None) -> dict | list[dict]:
    args = get_args_parser().parse_args(argv)
    tune_malloc()
    if args.compare:
        out = Path(args.out or "runs/compare")
        refuse_overwrite(out, args.force)
        return compare(args, out)
    if not args.checkpoint:
        raise UsageError("give --checkpoint PATH or --compare PATH PATH ...")
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{args.split}"
    refuse_overwrite(out, args.force)
    with atomic_folder(out) as folder:  # a failure leaves nothing that would block the rerun
        metrics = evaluate_checkpoint(args, args.checkpoint, folder)
    print(format_report(metrics))
    print(f"wrote {out}/metrics.json and pictures")
    return metrics


if __name__ == "__main__":
    run("evaluate.py", main)
