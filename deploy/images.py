"""Decoding untrusted image bytes: every failure is an `ImageRejected` with an HTTP status and a clear message.

Checks, cheapest first: empty input, byte size, that PIL recognises a format, the pixel count from the
header alone (before any pixel is decoded, so a decompression bomb costs nothing), then the full decode
(truncated files fail here). Limits are arguments, not PIL's process-wide `MAX_IMAGE_PIXELS`.
"""

import io
import warnings

from PIL import Image, UnidentifiedImageError

from data.cub import to_rgb

MAX_BYTES = 10 * 1024 * 1024  # 10 MB
MAX_PIXELS = 40_000_000  # 40 megapixels: above any phone photo, far below a decompression bomb


class ImageRejected(ValueError):
    """Input that is not an acceptable image; `status` is the HTTP status a service answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def decode_image(
    data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS, name: str = "image"
) -> Image.Image:
    """`data` decoded to an RGB PIL image, or `ImageRejected` naming `name` and the reason."""
    if not data:
        raise ImageRejected(f"{name}: empty upload (0 bytes)", 400)
    if len(data) > max_bytes:
        raise ImageRejected(f"{name}: {len(data):,} bytes is over the {max_bytes:,}-byte limit", 413)
    try:
        with warnings.catch_warnings():  # our own limit below replaces PIL's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # PIL's hard stop at twice its own limit
        raise ImageRejected(
            f"{name}: the image is over the {max_pixels:,}-pixel limit (a decompression bomb?)", 413
        ) from None
    except UnidentifiedImageError:
        raise ImageRejected(f"{name}: not an image (no known image format in {len(data):,} bytes)", 415) from None
    except Exception as e:  # a malformed header
        raise ImageRejected(f"{name}: unreadable image header ({e})", 400) from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageRejected(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the {max_pixels:,}-pixel limit", 413
        )
    try:
        img.load()
        return to_rgb(img)
    except Exception as e:  # truncated or corrupt data (OSError, SyntaxError, ValueError, ...)
        raise ImageRejected(f"{name}: cannot decode {img.format} image ({e})", 400) from None
