"""Hand-written preprocessing on uint8 (3, H, W) tensors (no torchvision).

The JPEG path (decode -> tensor) and the packed cache (memory-mapped uint8 -> tensor) share these: the eval
view is the same pixels either way, and a training crop the same region of the photo (`RandomResizedCrop`
draws fractions of the image). Randomness draws from torch's global generator, so `torch.manual_seed` (and the
DataLoader's per-worker seeding) makes it reproducible.

- train: random-resized crop (Szegedy et al. 2015: area fraction `scale`, aspect ratio `ratio`), horizontal
  flip, optional colour jitter (brightness, contrast, saturation), normalization.
- eval: `mobilenet.preprocess` (what a model's card builds: `mobilenet.card.ModelCard.transform`).
"""

import math
from collections.abc import Callable, Sequence

import torch

from mobilenet.preprocess import Compose, Normalize, ToFloat, check_image, resize


class RandomResizedCrop:
    """Crop a random area fraction in `scale` with aspect ratio in `ratio` (log-uniform), resize to `size`."""

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
        self.size, self.scale, self.ratio = size, scale, ratio

    def params(self, height: int, width: int) -> tuple[int, int, int, int]:
        """`(top, left, h, w)`. Drawn as fractions of the image's sides, so that a photo and a resized copy of
        it (the packed cache) get the same region from the same random draws."""
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            fraction = torch.empty(1).uniform_(*self.scale).item()
            aspect = math.exp(torch.empty(1).uniform_(*log_ratio).item())
            side_w = math.sqrt(fraction * aspect * height / width)  # the crop's width over the image's
            side_h = math.sqrt(fraction / aspect * width / height)
            if side_w <= 1 and side_h <= 1:
                w, h = max(1, round(side_w * width)), max(1, round(side_h * height))
                down, across = torch.rand(2).tolist()
                top = min(int(down * (height - h + 1)), height - h)
                left = min(int(across * (width - w + 1)), width - w)
                return top, left, h, w
        # Fallback: the largest centred crop within the ratio range.
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        check_image(x)
        top, left, h, w = self.params(*x.shape[-2:])
        return resize(x[:, top : top + h, left : left + w], (self.size, self.size))

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1) if torch.rand(1).item() < self.p else x

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Random brightness, contrast and saturation factors in [1 - s, 1 + s], in random order, on [0, 1] floats."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0) -> None:
        self.strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for i in torch.randperm(3).tolist():
            name = ("brightness", "contrast", "saturation")[i]
            strength = self.strengths[name]
            if strength <= 0:
                continue
            factor = torch.empty(1).uniform_(max(0.0, 1 - strength), 1 + strength).item()
            if name == "brightness":
                x = x * factor
            else:
                gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
                reference = gray.mean() if name == "contrast" else gray
                x = reference + factor * (x - reference)
            x = x.clamp(0, 1)
        return x

    def __repr__(self) -> str:
        return "ColorJitter(" + ", ".join(f"{k}={v}" for k, v in self.strengths.items()) + ")"


def train_transform(
    resolution: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    scale: tuple[float, float],
    hflip: float,
    color_jitter: float,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Compose:
    """Training augmentation: random-resized crop, flip, optional colour jitter, normalization. The values a
    run chooses (`scale`, `hflip`, `color_jitter`) have their defaults in the run record only
    (`training.config.RunConfig`)."""
    steps: list[Callable] = [RandomResizedCrop(resolution, scale, ratio)]
    if hflip > 0:
        steps.append(RandomHorizontalFlip(hflip))
    steps.append(ToFloat())
    if color_jitter > 0:
        steps.append(ColorJitter(color_jitter, color_jitter, color_jitter))
    steps.append(Normalize(mean, std))
    return Compose(steps)
