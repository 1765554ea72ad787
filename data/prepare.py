"""The packed cache: a split decoded once into a memory-mapped uint8 array, so an epoch never decodes a JPEG.

Each photo is kept whole, resized so its shorter side is `size` (aspect kept), exactly as the eval transform
resizes it: the random-resized crop sees the sides of a non-square photo as it does from the JPEG, and the
eval view is the same pixels. The photos lie one after the other, (H, W, 3) each, in one flat uint8 file
`<split>.u8` beside `<split>.json`, the index: each photo's offset and shape, labels, class names, boxes in
cache coordinates, and the signature of what it was built from (file list with sizes and modification times,
size, crop, classes). `packed_dataset` rebuilds the cache when that signature changes instead of reusing it.
The file is memory-mapped read-only: pages come from the OS page cache on demand, so a training run's own
(anonymous) memory does not grow with the size of the cache file.

`python -m data.prepare --root ROOT --size 256` builds the caches of both splits;
`python -m data.prepare --root ROOT --stats` prints the training split's per-channel mean and std.
"""

import argparse
import copy
import hashlib
import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atomicfile import atomic_path, write_atomically
from cli import nonnegative_int, positive_int
from data.cub import CUB200, ImageDecodeError, pil_to_tensor
from mobilenet.preprocess import resize_shorter

CACHE_VERSION = 2  # 1: the centre square of each photo; 2: the whole photo
DEFAULT_CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "packed"


def _signature(dataset: CUB200, size: int) -> dict:
    files = []
    for sample in dataset.samples:
        stat = sample.path.stat()
        files.append([str(sample.path.relative_to(dataset.root)), stat.st_size, stat.st_mtime_ns])
    return {
        "version": CACHE_VERSION,
        "root": str(dataset.root.resolve()),
        "split": dataset.split,
        "size": size,
        "crop": dataset.crop,
        "bbox_margin": dataset.bbox_margin,
        "class_ids": dataset.class_ids,
        "files": files,
    }


def _cache_paths(dataset: CUB200, size: int, cache_dir: Path) -> tuple[Path, Path]:
    key = hashlib.sha256(f"{dataset.root.resolve()}|{dataset.crop}|{dataset.class_ids}".encode()).hexdigest()[:12]
    folder = cache_dir / key
    stem = f"{dataset.split}-{size}"
    if dataset.split != "test" and dataset.val_fraction > 0:  # the held-out images depend on these
        fold = f"-fold{dataset.val_fold}" if dataset.val_fold is not None else ""
        stem = f"{dataset.split}-val{dataset.val_fraction:g}{fold}-seed{dataset.val_seed}-{size}"
    return folder / f"{stem}.u8", folder / f"{stem}.json"


def _shown(path: Path) -> str:
    """The path relative to the working directory when it lies inside it (logs without machine paths)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _pack_box(box, height: int, width: int, packed_height: int, packed_width: int) -> list[float] | None:
    """Map a box (x, y, w, h) of the original image into the packed photo's coordinates."""
    if box is None:
        return None
    sx, sy = packed_width / width, packed_height / height
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


class _PackSource(torch.utils.data.Dataset):
    """Decodes and resizes each image of a CUB200 (for a DataLoader with workers); None marks unreadable."""

    def __init__(self, dataset: CUB200, size: int) -> None:
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            image = pil_to_tensor(self.dataset.load_image(index))
        except ImageDecodeError as e:
            return index, None, str(e)
        height, width = image.shape[-2:]
        packed = resize_shorter(image, self.size)
        box = _pack_box(self.dataset.samples[index].box, height, width, *packed.shape[-2:])
        return index, packed.permute(1, 2, 0).contiguous().numpy(), box


def build_cache(dataset: CUB200, size: int = 256, cache_dir: str | Path = DEFAULT_CACHE_DIR, workers: int = 2) -> Path:
    """Pack `dataset` (no transform) into `<cache_dir>/<key>/<split>-<size>.u8`; return the index path."""
    if dataset.transform is not None:
        raise ValueError("build_cache needs a dataset without transform")
    array_path, index_path = _cache_paths(dataset, size, Path(cache_dir))
    with atomic_path(array_path) as tmp_array:  # removed if the build fails
        index = _pack(dataset, size, workers, tmp_array)
        index["sample_sha256"] = _sample_digest(tmp_array)
    array_path.with_suffix(".npy").unlink(missing_ok=True)  # the square cache of format 1, if there was one
    write_atomically(index_path, json.dumps(index))
    return index_path


SAMPLES = 64  # pieces of the pixel file whose digest the index keeps (a zeroed or swapped file fails it)


def _sample_digest(path: Path) -> str:
    """SHA-256 of SAMPLES 4 KB pieces spread evenly over the file, and its size: read in milliseconds at every
    open, unlike a digest of the whole file."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for k in range(SAMPLES):
            f.seek(k * size // SAMPLES)
            digest.update(f.read(4096))
    return digest.hexdigest()


def _unbatched(item: Any) -> Any:
    return item  # a module-level function, not a lambda: DataLoader workers started with spawn pickle it


def _pack(dataset: CUB200, size: int, workers: int, tmp_array: Path) -> dict:
    """Decode, resize and append each photo to `tmp_array`; the index that describes them."""
    loader = torch.utils.data.DataLoader(
        _PackSource(dataset, size), batch_size=None, num_workers=workers, collate_fn=_unbatched
    )
    kept: list[int] = []
    offsets: list[int] = []
    shapes: list[list[int]] = []
    boxes: list = []
    offset = 0
    with open(tmp_array, "wb") as out:
        for index, pixels, box in loader:  # in index order
            if pixels is None:
                if not dataset.skip_unreadable:
                    raise ImageDecodeError(box)
                warnings.warn(f"{box}; left out of the cache ({index + 1 - len(kept)} unreadable so far)", stacklevel=2)
                continue
            out.write(pixels.tobytes())
            kept.append(index)
            offsets.append(offset)
            shapes.append(list(pixels.shape[:2]))
            boxes.append(box)
            offset += pixels.size
    return {
        "signature": _signature(dataset, size),
        "class_names": dataset.class_names,
        "labels": [dataset.samples[i].label for i in kept],
        "offsets": offsets,
        "shapes": shapes,
        "boxes": boxes,
        "paths": [str(dataset.samples[i].path) for i in kept],
    }


class PackedDataset(torch.utils.data.Dataset):
    """(image, label) pairs from a packed cache; images are uint8 (3, H, W) tensors (shorter side the cache
    size) before `transform`."""

    def __init__(self, index_path: str | Path, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        index_path = Path(index_path)
        index = json.loads(index_path.read_text(encoding="utf-8"))
        self.index_path = index_path
        self.offsets: list[int] = index["offsets"]
        self.shapes: list[list[int]] = index["shapes"]
        self.labels: list[int] = index["labels"]
        self.boxes = index["boxes"]
        self.paths = index["paths"]
        self.class_names: list[str] = index["class_names"]
        self.transform = transform
        pixels = index_path.with_suffix(".u8")
        expected = sum(h * w * 3 for h, w in self.shapes)
        if not (len(self.offsets) == len(self.shapes) == len(self.labels)) or pixels.stat().st_size != expected:
            raise ValueError(
                f"{index_path}: the index does not describe {pixels.name} (the next --cache run rebuilds it)"
            )
        self.pixels = np.memmap(pixels, dtype=np.uint8, mode="r") if expected else np.zeros(0, np.uint8)

    @property
    def targets(self) -> list[int]:
        return self.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        (height, width), start = self.shapes[index], self.offsets[index]
        photo = np.array(self.pixels[start : start + height * width * 3]).reshape(height, width, 3)
        image = torch.from_numpy(photo).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


def packed_dataset(
    dataset: CUB200,
    transform: Callable | None = None,
    *,
    size: int = 256,
    cache_dir: str | Path = DEFAULT_CACHE_DIR,
    workers: int = 2,
    log: Callable[[str], None] = print,
) -> PackedDataset:
    """The packed cache of `dataset` (built or rebuilt when missing or stale), with `transform`.

    Under torchrun, rank 0 checks and builds while the other ranks wait at a barrier, then all open it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_rank() == 0:
            packed = _open_or_build(dataset, transform, size, Path(cache_dir), workers, log)
        dist.barrier()
        if dist.get_rank() != 0:
            packed = PackedDataset(_cache_paths(dataset, size, Path(cache_dir))[1], transform)
        return packed
    return _open_or_build(dataset, transform, size, Path(cache_dir), workers, log)


def _open_or_build(
    dataset: CUB200, transform: Callable | None, size: int, cache_dir: Path, workers: int, log: Callable[[str], None]
) -> PackedDataset:
    array_path, index_path = _cache_paths(dataset, size, Path(cache_dir))
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
            fresh = index.get("signature") == _signature(dataset, size)
            if fresh:
                packed = PackedDataset(index_path, transform)  # checks the index against the pixel file's size
                if index.get("sample_sha256") not in (None, _sample_digest(array_path)):
                    raise ValueError(f"{array_path.name} is not the file its index was built with")
                return packed
            log(f"packed cache {_shown(index_path)} is stale (its source changed): rebuilding")
        except (OSError, ValueError, AttributeError) as e:  # truncated, zeroed, or an unreadable index
            log(f"packed cache {_shown(index_path)} is damaged ({str(e).splitlines()[0][:160]}): rebuilding")
    else:
        log(f"building packed cache {_shown(index_path)} ({len(dataset)} images at {size}px)")
    source = copy.copy(dataset)  # the very same images (split, classes, validation fold), decoded raw
    source.transform = None
    return PackedDataset(build_cache(source, size, cache_dir, workers), transform)


def channel_stats(images: Iterable[torch.Tensor]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over all pixels of uint8 (3, H, W) images, on the [0, 1] scale."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    count = 0
    for image in images:
        x = image.to(torch.float64).div_(255).flatten(1)
        total += x.sum(1)
        total_sq += (x * x).sum(1)
        count += x.shape[1]
    mean = total / count
    std = (total_sq / count - mean**2).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Build the packed cache of a CUB-layout dataset, or print its statistics."
    )
    parser.add_argument("--root", required=True, help="CUB root (the folder holding images.txt)")
    parser.add_argument("--size", type=positive_int, default=256, help="side of the packed squares (default: 256)")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], help="splits to pack (default: train test)")
    parser.add_argument("--crop", choices=["none", "bbox"], default="none", help="pack box crops (default: none)")
    parser.add_argument(
        "--cache-dir", default=str(DEFAULT_CACHE_DIR), help=f"cache folder (default: {DEFAULT_CACHE_DIR})"
    )
    parser.add_argument("--workers", type=nonnegative_int, default=2, help="decoding processes (default: 2)")
    parser.add_argument("--stats", action="store_true", help="print the training split's mean/std as JSON instead")
    args = parser.parse_args(argv)
    if args.stats:
        packed = packed_dataset(
            CUB200(args.root, "train", crop=args.crop), size=args.size, cache_dir=args.cache_dir, workers=args.workers
        )
        mean, std = channel_stats(packed[i][0] for i in range(len(packed)))
        print(json.dumps({"mean": [round(m, 4) for m in mean], "std": [round(s, 4) for s in std]}))
        return
    for split in args.splits:
        packed = packed_dataset(
            CUB200(args.root, split, crop=args.crop), size=args.size, cache_dir=args.cache_dir, workers=args.workers
        )
        print(f"{split}: {len(packed)} images -> {packed.index_path}")


if __name__ == "__main__":
    main()
