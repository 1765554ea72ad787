"""Decoding untrusted image bytes: every failure is an `ImageRejected` with an HTTP status and a clear message.

Checks, cheapest first: empty input, byte size, that the format is one of the photo formats we allow (no
EPS, which Pillow would hand to Ghostscript, nor any other of Pillow's exotic readers), the pixel count and
the aspect ratio from the header alone (before any pixel is decoded, so a decompression bomb or a 1 x 20000
strip that the evaluation view would blow up to 256 x 5 million costs nothing), then the full decode
(truncated files fail here). The decoded image is upright RGB (`data.cub.to_rgb`: EXIF orientation applied,
16-bit greys scaled, not clipped), as the dataset loader sees it. Limits are arguments, not PIL's
process-wide `MAX_IMAGE_PIXELS`.
"""

import io
import os
import stat
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cli import InputError
from data.cub import to_rgb

MAX_BYTES = 10 * 1024 * 1024  # 10 MB
MAX_PIXELS = 40_000_000  # 40 megapixels: above any phone photo, far below a decompression bomb
MAX_ASPECT = 16  # longer side / shorter side: a 32:9 panorama is 3.6; a 1-pixel strip is not a photo
# Bytes a decode may take (its pixels at the mode's depth, plus the RGB copy): a 40-megapixel 8-bit RGB photo
# is 240 MB; a 16-bit 40-megapixel PNG of 78 KB would be 400 MB. Bounds one upload's memory, header first.
MAX_DECODE_BYTES = 256 * 1024 * 1024
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # a phone's multi-picture JPEG (MPO) opens as JPEG
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageRejected(InputError, ValueError):
    """Input that is not an acceptable image; `status` is the HTTP status a service answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def decode_image(data: bytes, *, name: str = "image", **limits: int | float) -> Image.Image:
    """`data` decoded to an RGB PIL image, or `ImageRejected` naming `name` and the reason; `limits` are
    `open_image`'s."""
    return finish_decode(open_image(data, name=name, **limits), name)  # type: ignore[arg-type]


def open_image(
    data: bytes,
    *,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_aspect: float = MAX_ASPECT,
    max_decode_bytes: int = MAX_DECODE_BYTES,
    name: str = "image",
) -> Image.Image:
    """Every check that the header allows, no pixel decoded yet: the opened image, or `ImageRejected`. Its
    decode will take `decode_bytes(img)` of memory (what a service budgets before `finish_decode`)."""
    if not data:
        raise ImageRejected(f"{name}: empty (0 bytes)", 400)
    if len(data) > max_bytes:
        raise ImageRejected(f"{name}: {len(data):,} bytes is over the {max_bytes:,}-byte limit", 413)
    try:
        with warnings.catch_warnings():  # our own limit below replaces PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:  # PIL's hard stop at twice its own limit
        raise ImageRejected(
            f"{name}: the image is over the {max_pixels:,}-pixel limit (a decompression bomb?)", 413
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected(
            f"{name}: not an image in an accepted format ({', '.join(FORMATS)}) in {len(data):,} bytes", 415
        ) from None
    except Exception as e:  # a malformed header
        raise ImageRejected(f"{name}: unreadable image header ({e})", 400) from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageRejected(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the {max_pixels:,}-pixel limit", 413
        )
    if width < 1 or height < 1 or max(width, height) > max_aspect * min(width, height):
        raise ImageRejected(f"{name}: {width}x{height} is not a photo (aspect ratio over {max_aspect:g}:1)", 413)
    slow = sorted({tile[0] for tile in img.tile if tile[0] in Image.DECODERS})
    if slow:  # Pillow's decoders written in Python (RLE BMP): seconds per kilobyte, a slot held for each
        raise ImageRejected(
            f"{name}: {img.format} compressed as {', '.join(slow)} is not accepted (too slow to decode)", 415
        )
    cost = decode_bytes(img)
    if cost > max_decode_bytes:
        raise ImageRejected(
            f"{name}: decoding {width}x{height} {img.mode} would take {cost / 2**20:,.0f} MB, over the "
            f"{max_decode_bytes / 2**20:,.0f} MB limit",
            413,
        )
    return img


def finish_decode(img: Image.Image, name: str = "image") -> Image.Image:
    """The pixels of an image `open_image` accepted, as upright RGB; `ImageRejected` if the data is bad."""
    try:
        img.load()
        return to_rgb(img)
    except Exception as e:  # truncated or corrupt data (OSError, SyntaxError, ValueError, ...)
        raise ImageRejected(f"{name}: cannot decode {img.format} image ({e})", 400) from None


def decode_bytes(img: Image.Image) -> int:
    """Memory the decode of `img` (an opened, not yet loaded image) and its RGB copy take, from the header."""
    width, height = img.size
    depth = _BYTES_PER_PIXEL.get(img.mode, 4)  # I, F, RGBA, CMYK, I;16 (the conversion widens it): 4
    return width * height * (depth + 3)


class NoImagesFound(InputError, ValueError):
    """Nothing to read: the paths given hold no image files."""


def find_images(paths: list[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files to read, and the paths skipped with the reason for each.

        A file is taken as given. A folder is searched with its sub-folders (a dataset's class folders), in
        sorted order, for names ending in one of `IMAGE_SUFFIXES`; links are followed, each real folder is walked and
    each real file taken once (a link cycle ends), but a dangling link or an
        image name that is not a regular file (a FIFO, a device) is skipped with its reason, as is a path that
        does not exist. Raises `NoImagesFound` when there is nothing to read and nothing skipped.
    """
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()  # real paths: a file reached twice (a link, a link cycle) is read once
    for given in map(Path, paths):
        if given.is_dir():
            found = []
            visited: set[Path] = set()
            inside = given.resolve()
            for folder, subfolders, names in os.walk(given, followlinks=True):
                real = Path(folder).resolve()
                if real in visited or not real.is_relative_to(inside):  # `self -> .`, `up -> ..`, out of the folder
                    subfolders.clear()
                    continue
                visited.add(real)
                subfolders.sort()
                found += [Path(folder) / name for name in names if name.lower().endswith(IMAGE_SUFFIXES)]
            if not found:
                skipped.append((given, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in it or its sub-folders"))
            candidates = sorted(found)
        else:
            candidates = [given]
        for path in candidates:
            reason = _not_a_regular_file(path)
            if reason:
                skipped.append((path, reason))
            elif path.resolve() not in seen:
                seen.add(path.resolve())
                files.append(path)
    if not files and not skipped:
        raise NoImagesFound("no images given")
    return files, skipped


def _not_a_regular_file(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a dangling link" if path.is_symlink() else "no such file or directory"
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    return None if stat.S_ISREG(mode) else "not a regular file"


def read_image_file(path: Path, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image at `path` as RGB, with the same checks as an upload; never reads more than `max_bytes` + 1."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise ImageRejected(f"{path}: {size:,} bytes is over the {max_bytes:,}-byte limit", 413)
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ImageRejected(f"{path}: cannot read it ({e.strerror or e})", 400) from None
    return decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels, name=str(path))
