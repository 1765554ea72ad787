"""Top-5 species for images: `python predict.py IMAGE_OR_DIR... --checkpoint runs/NAME/best.pt [--json]`.

`--checkpoint` takes a train.py checkpoint (`.pt`) or a model exported by export.py (`.onnx`). A directory
argument predicts every image in it (sorted; files PIL cannot read are reported and skipped). Prints one
block per image, or with `--json` one JSON document: `[{"image": path, "top": [{"label", "index",
"probability"}, ...]}, ...]`, with `"error"` instead of `"top"` for an image that could not be read.
"""

import argparse
import json
import sys
from pathlib import Path

from deploy.images import ImageRejected, decode_image
from deploy.predictor import Predictor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict bird species with a trained or exported MobileNet.")
    p.add_argument("images", nargs="+", help="image files or directories of images")
    p.add_argument("--checkpoint", required=True, help="train.py checkpoint (.pt) or export.py model (.onnx)")
    p.add_argument("--top-k", type=int, default=5, help="classes to show per image (default: 5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    return p


def expand(paths: list[str]) -> list[Path]:
    """Files as given; directories replaced by their image files (sorted). A missing path is an error."""
    files: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return files


def main(argv: list[str] | None = None) -> list[dict]:
    args = get_args_parser().parse_args(argv)
    if args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    predictor = Predictor.load(args.checkpoint)
    results: list[dict] = []
    readable: list[tuple[dict, object]] = []
    for path in expand(args.images):
        result = {"image": str(path)}
        results.append(result)
        try:
            readable.append((result, decode_image(path.read_bytes(), name=str(path))))
        except ImageRejected as e:
            result["error"] = str(e)
    for start in range(0, len(readable), args.batch_size):
        chunk = readable[start : start + args.batch_size]
        for (result, _), top in zip(chunk, predictor.predict([img for _, img in chunk], k=args.top_k)):
            result["top"] = top
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(result["image"])
            if "error" in result:
                print(f"  error: {result['error']}")
            for entry in result.get("top", []):
                print(f"  {entry['probability']:7.2%}  {entry['label']}")
    return results


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"predict.py: error: {e}")
