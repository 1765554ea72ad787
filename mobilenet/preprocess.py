"""The test-time view a model's weights expect, on uint8 (3, H, W) tensors: resize, centre crop, normalize.

Below `data/` because the model card (`mobilenet.card`) builds it: evaluation, prediction, export and the
training run's own evaluation all get their pixels here. Training's random augmentations are in
`data.transforms`, on the same `resize`.

- centre view: resize the shorter side to resolution / `CENTRE_CROP_FRACTION`, take the centre square;
- full view: the whole image resized to a square (aspect ratio not kept).
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# The centre crop's share of the resized image's shorter side: 224 of 256, as in every ImageNet evaluation.
CENTRE_CROP_FRACTION = 0.875


def check_image(x: torch.Tensor) -> None:
    if x.dim() != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(x.shape)}")


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (antialiased when shrinking, like PIL) of a (3, H, W) image or an (N, 3, H, W) batch;
    keeps the dtype."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    batch = x if x.ndim == 4 else x[None]
    out = F.interpolate(batch.float(), size=size, mode="bilinear", align_corners=False, antialias=True)
    out = out if x.ndim == 4 else out[0]
    if x.dtype == torch.uint8:
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    return out


def resize_shorter(x: torch.Tensor, shorter: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    scale = shorter / min(height, width)
    return resize(x, (max(1, round(height * scale)), max(1, round(width * scale))))


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    height, width = x.shape[-2:]
    if height < size or width < size:
        x = resize_shorter(x, size)
        height, width = x.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return x[:, top : top + size, left : left + size]


class Compose:
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            x = transform(x)
        return x

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class ResizeCenterCrop:
    """Eval: resize the shorter side to size / crop_fraction, then take the centre size x size."""

    def __init__(self, size: int, crop_fraction: float = CENTRE_CROP_FRACTION) -> None:
        self.size, self.crop_fraction = size, crop_fraction

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x)
        return center_crop(resize_shorter(x, round(self.size / self.crop_fraction)), self.size)

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, crop_fraction={self.crop_fraction})"


class Resize:
    """Resize the whole image to size x size, ignoring its aspect ratio (the "full image" test view)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x)
        return resize(x, (self.size, self.size))

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


class ToFloat:
    """uint8 [0, 255] -> float32 [0, 1]."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255) if x.dtype == torch.uint8 else x.float()

    def __repr__(self) -> str:
        return "ToFloat()"


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def eval_transform(
    resolution: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    crop_fraction: float = CENTRE_CROP_FRACTION,
) -> Compose:
    """Evaluation: resize the shorter side to resolution / crop_fraction, centre crop, normalization."""
    return Compose([ResizeCenterCrop(resolution, crop_fraction), ToFloat(), Normalize(mean, std)])
