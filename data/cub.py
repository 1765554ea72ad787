"""CUB-200-2011 (Wah et al., 2011) from its official files.

Layout under `root` (the folder holding `images.txt`):
- `images.txt`              `<image_id> <relative path under images/>`
- `image_class_labels.txt`  `<image_id> <class_id>`
- `train_test_split.txt`    `<image_id> <1 = train, 0 = test>`
- `classes.txt`             `<class_id> <NNN.Class_Name>`
- `bounding_boxes.txt`      `<image_id> <x> <y> <width> <height>` in pixels (needed for `crop="bbox"`)

Class ids need not start at 1 or be contiguous: labels are 0..K-1 in `classes.txt` order. Opening a
dataset checks the metadata and that every listed image exists (cheap); decoding happens when an image is
read. Every error names the file and, for metadata, the line.
"""

import math
import os
import random
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from cli import InputError

SPLITS = ("train", "val", "test")
CROPS = ("none", "bbox")


class CUBFormatError(InputError, ValueError):
    """Malformed or inconsistent CUB metadata, or a listed image that is missing."""


class ImageDecodeError(InputError, OSError):
    """An image file that exists but cannot be decoded."""


@dataclass(frozen=True)
class Sample:
    image_id: int
    path: Path
    label: int
    box: tuple[float, float, float, float] | None  # x, y, width, height in pixels


def readable_class_name(folder_name: str) -> str:
    """`001.Black_footed_Albatross` -> `Black-footed Albatross` (lower-case word after `_`: a hyphen)."""
    name = re.sub(r"^\d+\.", "", folder_name)
    name = re.sub(r"_(?=[a-z])", "-", name)
    return name.replace("_", " ")


def _shorten(line: str, limit: int = 120) -> str:
    """A metadata line as it goes into an error message: stripped, and cut to `limit` characters."""
    line = line.strip()
    return repr(line) if len(line) <= limit else repr(line[:limit]) + f"... ({len(line):,} characters)"


def _read_table(path: Path, n_fields: int, convert: Callable[[list[str]], tuple]) -> dict[int, tuple]:
    """Read `<id> <fields...>` lines into {id: converted fields}; errors name the file and line."""
    if not path.is_file():
        raise CUBFormatError(f"{path}: metadata file is missing")
    table: dict[int, tuple] = {}
    raw = path.read_bytes()
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line_number = raw[: e.start].count(b"\n") + 1
        raise CUBFormatError(f"{path}:{line_number}: not UTF-8 text (byte {e.object[e.start]:#x})") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=n_fields)
        if len(parts) != n_fields + 1:
            raise CUBFormatError(f"{path}:{lineno}: expected {n_fields + 1} fields, got {_shorten(line)}")
        try:
            key = int(parts[0])
            value = convert(parts[1:])
        except ValueError as e:
            raise CUBFormatError(f"{path}:{lineno}: malformed line {_shorten(line)} ({_shorten(str(e))})") from None
        if key in table:
            raise CUBFormatError(f"{path}:{lineno}: duplicate id {key}")
        table[key] = value
    return table


def _check_same_ids(reference: dict, reference_path: Path, other: dict, other_path: Path) -> None:
    if reference.keys() != other.keys():
        only_ref = sorted(set(reference) - set(other))[:5]
        only_other = sorted(set(other) - set(reference))[:5]
        raise CUBFormatError(
            f"{other_path}: image ids disagree with {reference_path.name} "
            f"(missing here: {only_ref}, not in {reference_path.name}: {only_other})"
        )


ORIENTATION = 0x0112  # the EXIF tag


def to_rgb(img: Image.Image) -> Image.Image:
    """`img` (decoded) as upright RGB, whatever its mode: the EXIF orientation applied (a phone photo the
    right way up), 16- and 32-bit greys scaled to 8 bits (not clipped), transparency put on white."""
    transposed = ImageOps.exif_transpose(img) if img.getexif().get(ORIENTATION, 1) != 1 else img  # no copy if upright
    img = transposed if transposed is not None else img
    if img.mode == "RGB":
        return img  # already what is wanted: no second copy of a large photo
    if img.mode == "I" or img.mode.startswith("I;16"):  # integer greys (16-bit PNGs): 0..65535 -> 0..255
        grey = np.empty((img.height, img.width), dtype=np.uint8)
        step = max(1, (1 << 22) // max(img.width, 1))  # about 4 M pixels at a time: no full-size int64 copy
        for top in range(0, img.height, step):
            band = np.asarray(img.crop((0, top, img.width, min(top + step, img.height))), dtype=np.int64)
            grey[top : top + step] = band.clip(0, 65535) // 257
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB")


def load_rgb(path: Path) -> Image.Image:
    """Decode `path` as an RGB image, whatever its mode (L, CMYK, P, RGBA: transparency goes on white)."""
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"cannot decode image {path}: {e}") from None


def crop_to_box(img: Image.Image, box: tuple[float, float, float, float], margin: float) -> Image.Image:
    """Crop to box (x, y, w, h) grown by `margin` x its size on each side, clipped to the image."""
    x, y, w, h = box
    left = max(0, int(round(x - margin * w)))
    top = max(0, int(round(y - margin * h)))
    right = min(img.width, int(round(x + w + margin * w)))
    bottom = min(img.height, int(round(y + h + margin * h)))
    if right <= left or bottom <= top:
        return img
    return img.crop((left, top, right, bottom))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor (3, H, W)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class CUB200(torch.utils.data.Dataset):
    """CUB-200-2011 split as (image, label) pairs.

    Args:
        root: folder holding `images.txt` and `images/`.
        split: "test" (the official test split), "train" (the official training split, less the validation
            images when `val_fraction` > 0) or "val" (those validation images).
        transform: applied to the uint8 (3, H, W) tensor of the RGB image; None returns the tensor.
        crop: "none", or "bbox" to crop each image to its bounding box grown by `bbox_margin`.
        classes: class ids (as in `classes.txt`) to keep, relabelled 0..k-1 in `classes.txt` order.
        skip_unreadable: on an image that cannot be decoded, warn (with a running count) and return the
            next readable sample instead of raising.
        val_fraction: the fraction of each class's training images held out as "val" (stratified).
        val_seed: which images are held out (`carve_validation`).
        val_fold: None for a seeded random `val_fraction` of each class; k to hold out the k-th of
            round(1 / val_fraction) disjoint folds (k-fold cross-validation; `carve_validation`).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        crop: str = "none",
        classes: Iterable[int] | None = None,
        *,
        bbox_margin: float = 0.1,
        skip_unreadable: bool = False,
        val_fraction: float = 0.0,
        val_seed: int = 0,
        val_fold: int | None = None,
    ) -> None:
        root = Path(root)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: CUB root folder does not exist")
        self.root, self.split, self.transform, self.crop = root, split, transform, crop
        self.bbox_margin, self.skip_unreadable = bbox_margin, skip_unreadable
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if split == "val" and val_fraction == 0:
            raise ValueError("split 'val' needs val_fraction > 0 (the validation images are carved from train)")
        if val_fold is not None:
            fold_count(val_fraction, val_fold)  # raises on a fraction that is not 1/n or a fold out of range
        self.val_fraction, self.val_seed, self.val_fold = val_fraction, val_seed, val_fold
        self.unreadable: set[Path] = set()

        class_table = _read_table(root / "classes.txt", 1, lambda p: (p[0].strip(),))
        class_ids = list(class_table)
        if classes is not None:
            wanted = list(classes)
            unknown = sorted(set(wanted) - set(class_ids))
            if unknown:
                raise ValueError(f"classes {unknown} are not in {root / 'classes.txt'}")
            class_ids = [c for c in class_ids if c in set(wanted)]
        self.class_ids = class_ids
        self.class_folders = [class_table[c][0] for c in class_ids]
        if len(set(self.class_folders)) != len(self.class_folders):
            twice = sorted({f for f in self.class_folders if self.class_folders.count(f) > 1})
            raise CUBFormatError(f"{root / 'classes.txt'}: class folder {twice[0]!r} is listed under two class ids")
        self.class_names = [readable_class_name(f) for f in self.class_folders]
        label_of = {c: i for i, c in enumerate(class_ids)}

        paths = _read_table(root / "images.txt", 1, lambda p: (p[0].strip(),))
        labels = _read_table(root / "image_class_labels.txt", 1, lambda p: (int(p[0]),))
        is_train = _read_table(root / "train_test_split.txt", 1, lambda p: (_zero_or_one(p[0]),))
        _check_same_ids(paths, root / "images.txt", labels, root / "image_class_labels.txt")
        _check_same_ids(paths, root / "images.txt", is_train, root / "train_test_split.txt")
        boxes: dict[int, tuple] = {}
        if crop == "bbox" or (root / "bounding_boxes.txt").exists():
            boxes = _read_table(root / "bounding_boxes.txt", 4, _finite_box)
            odd = [i for i, (x, y, w, h) in boxes.items() if w <= 0 or h <= 0 or x < 0 or y < 0]
            if odd:
                warnings.warn(
                    f"{root / 'bounding_boxes.txt'}: {len(odd)} box(es) of zero or negative size or starting outside "
                    f"the image (image ids {odd[:5]}): a bbox crop uses the whole image for them",
                    stacklevel=2,
                )
            _check_same_ids(paths, root / "images.txt", boxes, root / "bounding_boxes.txt")
        unknown_classes = sorted({c for (c,) in labels.values()} - set(class_table))
        if unknown_classes:
            raise CUBFormatError(
                f"{root / 'image_class_labels.txt'}: class ids {unknown_classes[:5]} not in classes.txt"
            )

        samples = []
        want_train = split != "test"
        for image_id, (rel_path,) in paths.items():
            (class_id,) = labels[image_id]
            if is_train[image_id][0] != want_train or class_id not in label_of:
                continue
            path = root / "images" / rel_path
            # Judged by the path as written (no "..", not absolute), not where links lead: a folder of
            # per-file links to photos kept elsewhere is a fine CUB root.
            lexical = Path(os.path.normpath(rel_path))
            if lexical.is_absolute() or lexical.parts[:1] == ("..",):
                raise CUBFormatError(
                    f"{root / 'images.txt'}: image {image_id} path {_shorten(rel_path)} leads outside {root / 'images'}"
                )
            if not path.is_file():
                raise CUBFormatError(f"{root / 'images.txt'}: image {image_id} is listed but missing: {path}")
            samples.append(Sample(image_id, path, label_of[class_id], boxes.get(image_id)))
        if split != "test" and val_fraction > 0:
            fit, held_out = carve_validation(samples, val_fraction, val_seed, fold=val_fold)
            samples = held_out if split == "val" else fit
        self.samples = samples

    @property
    def targets(self) -> list[int]:
        return [s.label for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> Image.Image:
        """The RGB image of sample `index`, cropped to its box when `crop="bbox"`."""
        sample = self.samples[index]
        img = load_rgb(sample.path)
        if self.crop == "bbox" and sample.box is not None:
            img = crop_to_box(img, sample.box, self.bbox_margin)
        return img

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not -len(self.samples) <= index < len(self.samples):  # so that `for x in dataset` ends
            raise IndexError(f"index {index} out of range for {len(self.samples)} samples")
        index %= len(self.samples)
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            try:
                image = pil_to_tensor(self.load_image(i))
            except ImageDecodeError as e:
                if not self.skip_unreadable:
                    raise
                self.unreadable.add(self.samples[i].path)
                warnings.warn(f"{e}; skipped ({len(self.unreadable)} unreadable image(s) so far)", stacklevel=2)
                continue
            if self.transform is not None:
                image = self.transform(image)
            return image, self.samples[i].label
        raise ImageDecodeError(f"no readable image in {self.root} ({self.split})")


def fold_count(fraction: float, fold: int) -> int:
    """The number of cross-validation folds a validation fraction of 1/n means (n); raises ValueError when the
    fraction is not 1/n for a whole n >= 2 or `fold` is not in [0, n)."""
    count = round(1 / fraction) if fraction > 0 else 0
    if count < 2 or abs(count * fraction - 1) > 1e-6:
        raise ValueError(
            f"cross-validation folds need a validation fraction of 1/n (0.5, 0.2, 0.1, ...), got {fraction}"
        )
    if not 0 <= fold < count:
        raise ValueError(f"fold must be in [0, {count}) for a validation fraction of {fraction:g}, got {fold}")
    return count


def carve_validation(
    samples: list[Sample], fraction: float, seed: int, fold: int | None = None
) -> tuple[list[Sample], list[Sample]]:
    """Split training samples into (train, val), stratified by class. Each class's image ids are shuffled by a
    generator seeded by (seed, the class's image ids), so the choice does not depend on which other classes are
    loaded. With `fold` None, round(fraction x its count) images per class are held out (at least one when the
    class has two or more); with `fold` k, the shuffled ids are cut into round(1 / fraction) nearly equal
    contiguous folds and the k-th is held out, so the folds of one seed are disjoint and cover every image
    once. Both lists keep the original order."""
    folds = fold_count(fraction, fold) if fold is not None else 0
    by_class: dict[int, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    held_out: set[int] = set()
    for members in by_class.values():
        ids = sorted(s.image_id for s in members)
        rng = random.Random(f"{seed}:{ids[0]}:{len(ids)}")
        if fold is None:
            count = min(len(ids) - 1, max(1, round(fraction * len(ids)))) if len(ids) > 1 else 0
            held_out.update(rng.sample(ids, count))
        else:
            rng.shuffle(ids)
            held_out.update(ids[round(fold * len(ids) / folds) : round((fold + 1) * len(ids) / folds)])
    return [s for s in samples if s.image_id not in held_out], [s for s in samples if s.image_id in held_out]


def _finite_box(fields: list[str]) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in fields)
    if not all(map(math.isfinite, (x, y, w, h))):
        raise ValueError("box values must be finite numbers")
    return x, y, w, h


def _zero_or_one(text: str) -> bool:
    if text.strip() not in ("0", "1"):
        raise ValueError(f"expected 0 or 1, got {text.strip()!r}")
    return text.strip() == "1"
