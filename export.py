"""Export a trained model: `python export.py --checkpoint runs/NAME/best.pt --format onnx|executorch --out PATH`.

The BN-folded model, wrapped in the run's test-time inference (`mobilenet.tta`: flip averaging and look-twice when
the run used them), is exported with its class names and normalization (inside the ONNX file and in
`PATH.json`), then run by the target runtime on real images and compared with PyTorch: the export fails, and
writes nothing, if any logit differs by more than `--tolerance` (default 1e-4). The images are `--images`
(files, or folders searched with their sub-folders) or, by default, `--verify-count` test images spread over
the data the run trained on.

- `onnx`: for services (onnxruntime, any language); dynamic batch.
- `executorch`: a `.pte` program for the ExecuTorch runtime on Android/iOS (XNNPACK CPU backend); batch 1.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from cli import UsageError, nonnegative_float, positive_int, run
from deploy.export import export_executorch, export_onnx
from deploy.images import ImageRejected, NoImagesFound, find_images, read_image_file
from deploy.predictor import export_metadata, inference_model, preprocessor
from deploy.requirements import require
from mobilenet import load_checkpoint
from mobilenet.card import ModelCard
from mobilenet.checkpoint import refuse_overwrite
from mobilenet.gate import gate_in_use
from training.config import RunConfig

SUFFIXES = {"onnx": ".onnx", "executorch": ".pte"}
DEPENDENCIES = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "executorch": ("executorch",)}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a trained MobileNet to ONNX or ExecuTorch and verify it.")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py")
    p.add_argument("--format", choices=sorted(SUFFIXES), default="onnx", help="target format (default: onnx)")
    p.add_argument("--out", default=None, help="output file (default: beside the checkpoint, .onnx or .pte)")
    p.add_argument(
        "--images",
        nargs="*",
        default=None,
        help="image files, or folders searched with their sub-folders, to verify on (default: the run's test split)",
    )
    p.add_argument("--verify-count", type=positive_int, default=32, help="images to verify on (default: 32)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument(
        "--tolerance", type=nonnegative_float, default=1e-4, help="largest |logit difference| allowed (default: 1e-4)"
    )
    return p


def verification_images(args: argparse.Namespace, card: ModelCard, info: dict) -> tuple[np.ndarray, str]:
    """Preprocessed real images (N, 3, R, R) to compare the runtimes on, and where they came from."""
    if args.images:
        found, skipped = find_images(args.images)
        for path, reason in skipped:
            print(f"export.py: skipped {path}: {reason}", file=sys.stderr)
        step = max(1, len(found) // args.verify_count)
        paths = found[::step][: args.verify_count]
        source = ", ".join(args.images)
    else:
        run = RunConfig.of_checkpoint(info)
        try:
            root = run.data_root_here(flag="--images FILE_OR_DIR to verify on")
        except UsageError as e:
            raise NoImagesFound(str(e)) from None
        dataset = run.dataset("test", None, data_root=root)
        step = max(1, len(dataset) // args.verify_count)
        paths = [dataset.samples[i].path for i in range(0, len(dataset), step)][: args.verify_count]
        source = f"{root} (test split)"
    preprocess = preprocessor(card)
    images = []
    for path in paths:
        try:
            images.append(preprocess(read_image_file(Path(path))))
        except ImageRejected as e:
            print(f"export.py: skipped {e}", file=sys.stderr)
    if not images:
        raise NoImagesFound(f"no readable images to verify on in {source}")
    return np.stack(images), source


def main(argv: list[str] | None = None) -> dict:
    args = get_args_parser().parse_args(argv)
    require(*DEPENDENCIES[args.format], purpose=f"export.py --format {args.format}")
    model, card, info = load_checkpoint(args.checkpoint)
    gate = gate_in_use(card.gate_threshold, info)
    metadata = export_metadata(card, info["model_config"], gated=gate is not None)
    metadata["source_checkpoint"] = Path(args.checkpoint).name  # the file, not this machine's folders
    exported = inference_model(model, card, channels_last=False, gate=gate)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(SUFFIXES[args.format])
    if out.is_dir():
        raise FileExistsError(f"--out {out} is a folder: give the path of the {SUFFIXES[args.format]} file to write")
    for path in (out, out.with_name(out.name + ".json")):  # the model and its metadata beside it
        refuse_overwrite(path, args.force)
    images, source = verification_images(args, card, info)
    export = export_onnx if args.format == "onnx" else export_executorch
    report = export(exported, metadata, out, images, tolerance=args.tolerance)
    report["verified_on"] = source
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.2f} MB) and {report['sidecar']}")
    print(
        f"verified on {report['images']} images from {source}: max |logit difference| "
        f"{report['max_abs_difference']:.2e}, same top-1 on {report['same_top1']:.0%}"
    )
    return report


if __name__ == "__main__":
    run("export.py", main)
