"""Top-5 species for images: `python predict.py IMAGE_OR_DIR... --checkpoint runs/NAME/best.pt [--json]`.

`--checkpoint` takes a train.py checkpoint (`.pt`) or a model exported by export.py (`.onnx`). A folder
argument predicts every image file in it and in its sub-folders (a CUB `images/` folder of class folders
works as given), in sorted order. Every file that cannot be read (missing, empty, truncated, not an image,
too large, a dangling link) is reported with its reason and the others are still predicted. Prints one
block per image ("no bird", or the answer at the level the model is sure of, then the top species), or with
`--json` one JSON document: `[{"image": path, "bird", "no_bird_probability", "answer": {"level", "name",
"probability"}, "top": [{"label", "index", "probability"}, ...], "lookalike"}, ...]` (`Predictor.predict`),
with `"error"` instead of the rest for an image that could not be read. `--explain DIR` also writes, for each
photo, where the model looked (Grad-CAM of the top species over the view it saw) as `DIR/NNNN-NAME.jpg`, and
names the file in `"explained"` (not for a photo with no bird; `.pt` and `.tflite` models: an ONNX file has
no gradients to read).

Exit status: 0 when every image was predicted, 1 when at least one was reported unreadable, 2 for a usage
error (a bad option, no images, an unreadable model file).
"""

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from PIL import Image

from atomicfile import write_atomically
from cli import UsageError, positive_int, run
from deploy.images import ImageRejected, NoImagesFound, find_images, read_image_file
from deploy.predictor import Predictor
from mobilenet.checkpoint import CheckpointError


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Predict bird species with a trained or exported MobileNet.",
        epilog="Folders are searched with their sub-folders. Exit status: 0 all predicted, 1 some images "
        "unreadable (each reported), 2 usage error.",
    )
    p.add_argument("images", nargs="+", help="image files, or folders searched with their sub-folders")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="train.py checkpoint (.pt), export.py model (.onnx), or a published model as it is: a Google .tflite "
        "with its labels file beside it, or inat-birds (names 964 bird species with no training)",
    )
    p.add_argument("--top-k", type=positive_int, default=5, help="classes to show per image (default: 5)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default: 32)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument(
        "--explain", default=None, metavar="DIR", help="write a Grad-CAM picture per photo into DIR (where it looked)"
    )
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    """Predict as the command line says; returns one result per image (with "top" or "error")."""
    args = get_args_parser().parse_args(argv)
    try:
        files, skipped = find_images(args.images)
        predictor = Predictor.load(args.checkpoint)
    except (NoImagesFound, FileNotFoundError, CheckpointError) as e:
        raise UsageError(str(e)) from None
    explain = Path(args.explain) if args.explain else None
    if explain is not None:
        if not predictor.explainable:
            raise UsageError(f"--explain: {args.checkpoint} is an ONNX file: Grad-CAM needs the .pt or .tflite model")
        if explain.exists() and not explain.is_dir():
            raise UsageError(f"--explain {explain}: not a folder")
        explain.mkdir(parents=True, exist_ok=True)
    results: list[dict] = [{"image": str(path), "error": reason} for path, reason in skipped]
    if not args.json:
        for result in results:
            show(result)
    for start in range(0, len(files), args.batch_size):
        # A batch at a time: decoded images are dropped once predicted, and the text output streams.
        chunk = [{"image": str(path)} for path in files[start : start + args.batch_size]]
        results += chunk
        batch: list[tuple[dict, Image.Image]] = []
        for result in chunk:
            try:
                batch.append((result, read_image_file(Path(result["image"]))))
            except ImageRejected as e:
                result["error"] = str(e)
        if batch:
            for (result, _), answered in zip(batch, predictor.predict([img for _, img in batch], k=args.top_k)):
                result.update(answered)
            if explain is not None:
                birds = [(r, img) for r, img in batch if r["bird"] is not False]  # no bird: no answer to explain
                targets = [r["top"][0]["index"] for r, _ in birds]
                pictures = predictor.explain([img for _, img in birds], targets) if birds else []
                for (result, _), picture in zip(birds, pictures):
                    name = explain / f"{start + chunk.index(result):04d}-{Path(result['image']).stem}.jpg"
                    write_atomically(name, partial(picture.save, format="JPEG", quality=90))
                    result["explained"] = str(name)
        del batch
        if not args.json:
            for result in chunk:
                show(result)
    if args.json:
        print(json.dumps(results, indent=2))
    return results


def show(result: dict) -> None:
    print(result["image"])
    if "error" in result:
        print(f"  error: {result['error']}")
    if result.get("bird") is False:
        print(f"  no bird (probability of no bird {result['no_bird_probability']:.2%})")
        sys.stdout.flush()
        return
    if result.get("answer"):
        answered = result["answer"]
        level = "" if answered["level"] in ("species", "bird") else f"{answered['level']} "
        print(f"  answer: {level}{answered['name']} ({answered['probability']:.2%})")
    if result.get("lookalike"):
        print(f"  often confused with: {result['lookalike']}")
    for entry in result.get("top", []):
        print(f"  {entry['probability']:7.2%}  {entry['label']}")
    sys.stdout.flush()


def cli() -> None:
    def predict_all() -> int:
        results = main()
        failed = sum("error" in r for r in results)
        if failed:
            print(f"predict.py: {failed} of {len(results)} images could not be read (reported above)", file=sys.stderr)
        return 1 if failed else 0

    run("predict.py", predict_all)


if __name__ == "__main__":
    cli()
