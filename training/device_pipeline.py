"""Training batches made on the training device from the packed cache: `train.py --cache --device-pipeline`.

The DataLoader path decodes nothing with `--cache`, but still crops, resizes, flips and normalises every image
on the CPU, one at a time: on a GPU machine with a few cores that, not the model, sets the pace. Here the
cache's photos are copied to the device once (uint8) and each batch is made there:

- each sample's crop and flip are drawn on the CPU exactly as the loader's transform draws them, from the
  same per-sample seed (`data.loaders.SeededSampler`), so a run is the same run either way and a resume
  replays its epochs exactly;
- each crop is gathered from the photos (one flat uint8 tensor on the device, as the cache file holds them)
  into a window of the batch's largest crop, and the crop-and-resize of the whole batch is two batched matrix
  products, `Wy @ window @ Wx^T`, whose rows are the weights of torch's antialiased bilinear resize
  (`data.transforms.resize`): a triangle filter widened by the scale factor when shrinking, normalised over the
  crop (the PIL convention torch follows);
- the result is rounded to whole pixel values as the reference resize's uint8 output is, flipped and
  normalised on the device.

On a CPU the batched products cost more than resizing each crop (`data.transforms.resize`, as the loader
does; measured in `bench.feed`), so there each crop is resized alone and the pixels are the loader's exactly;
`batched=True` forces the products (the tests check both against the loader's transform).

Colour jitter is not done here (`--color-jitter` needs the loader path).
"""

import warnings
from collections.abc import Iterator

import numpy as np
import torch

from data.loaders import SeededSampler
from data.prepare import PackedDataset
from data.transforms import ColorJitter, RandomHorizontalFlip, RandomResizedCrop
from mobilenet.preprocess import Compose, Normalize, resize


def resize_weights(start: torch.Tensor, length: torch.Tensor, size: int, out: int) -> torch.Tensor:
    """(B, out, size) weights: row i resamples source pixels [start, start + length) of a line of `size`
    pixels to output pixel i of `out`, as torch's antialiased bilinear interpolation (align_corners=False)."""
    scale = (length.float() / out)[:, None, None]  # (B, 1, 1)
    center = scale * (torch.arange(out, device=start.device).float()[None, :, None] + 0.5)
    source = torch.arange(size, device=start.device).float()[None, None, :] - start.float()[:, None, None]
    support = scale.clamp(min=1.0)
    weights = (1 - ((source + 0.5 - center) / support).abs()).clamp(min=0)
    inside = (source >= 0) & (source < length.float()[:, None, None])
    weights = weights * inside
    return weights / weights.sum(-1, keepdim=True)


class DeviceBatches:
    """An iterable of `(images, labels)` training batches made on `device` (see the module docstring); as long
    as the DataLoader it replaces (`batch_size`, `drop_last`), its sample order that of `sampler`."""

    def __init__(
        self,
        packed: PackedDataset,
        transform: Compose,
        sampler: SeededSampler,
        *,
        batch_size: int,
        drop_last: bool,
        device: torch.device,
        batched: bool | None = None,
    ) -> None:
        steps = transform.transforms
        if any(isinstance(t, ColorJitter) for t in steps):
            raise ValueError("--device-pipeline does not do --color-jitter (use the loader path)")
        self.crop = next(t for t in steps if isinstance(t, RandomResizedCrop))
        self.flip = next((t for t in steps if isinstance(t, RandomHorizontalFlip)), None)
        normalize = next(t for t in steps if isinstance(t, Normalize))
        self.mean, self.std = normalize.mean.to(device), normalize.std.to(device)
        self.sampler, self.batch_size, self.drop_last, self.device = sampler, batch_size, drop_last, device
        self.batched = device.type != "cpu" if batched is None else batched
        self.shapes = [tuple(s) for s in packed.shapes]
        # Every photo, (H, W, 3) after another: on the CPU read in place from the cache file (no second copy).
        pixels = packed.pixels if device.type == "cpu" else np.array(packed.pixels)
        with warnings.catch_warnings():  # a read-only memmap: nothing here writes to it
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            self.pixels = torch.from_numpy(pixels).to(device)
        self.offsets = torch.tensor(packed.offsets, device=device)
        self.widths = torch.tensor([w for _, w in self.shapes], device=device)
        self.labels = torch.tensor(packed.labels, device=device)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pairs = list(self.sampler)
        for b in range(len(self)):
            yield self.batch(pairs[b * self.batch_size : (b + 1) * self.batch_size])

    def draws(self, pairs: list[tuple[int, int]]) -> torch.Tensor:
        """(B, 5) int64: top, left, height, width, flipped, drawn per sample as the loader's transform draws."""
        rows = []
        with torch.random.fork_rng(devices=[]):  # the training loop's own random stream is left as it was
            for index, seed in pairs:
                torch.manual_seed(seed % 2**63)
                top, left, h, w = self.crop.params(*self.shapes[index])
                flipped = self.flip is not None and torch.rand(1).item() < self.flip.p
                rows.append([top, left, h, w, int(flipped)])
        return torch.tensor(rows)

    def batch(self, pairs: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.tensor([i for i, _ in pairs], device=self.device)
        draws = self.draws(pairs)
        top, left, h, w, flipped = draws.to(self.device).unbind(1)
        window_h, window_w = int(draws[:, 2].max()), int(draws[:, 3].max())  # from the CPU copy: no sync
        # Flat positions of each crop's window (B, window_h, window_w, 3); rows and columns past a crop's own
        # size repeat its last pixel and get zero weight.
        rows = top[:, None] + torch.minimum(torch.arange(window_h, device=self.device), h[:, None] - 1)
        cols = left[:, None] + torch.minimum(torch.arange(window_w, device=self.device), w[:, None] - 1)
        pixel = rows[:, :, None] * self.widths[index][:, None, None] + cols[:, None, :]
        flat = self.offsets[index][:, None, None, None] + pixel[..., None] * 3 + torch.arange(3, device=self.device)
        windows = self.pixels[flat].permute(0, 3, 1, 2)  # (B, 3, window_h, window_w) uint8
        size = self.crop.size
        if self.batched:
            zero = torch.zeros_like(top)
            weights_y = resize_weights(zero, h, window_h, size)  # (B, R, window_h)
            weights_x = resize_weights(zero, w, window_w, size)  # (B, R, window_w)
            crops = (
                (weights_y[:, None] @ windows.float() @ weights_x[:, None].transpose(-1, -2)).round_().clamp_(0, 255)
            )
        else:
            sizes = draws[:, 2:4].tolist()
            crops = torch.stack([resize(x[:, :ch, :cw], (size, size)) for x, (ch, cw) in zip(windows, sizes)]).float()
        crops = torch.where(flipped.bool()[:, None, None, None], crops.flip(-1), crops)
        return (crops / 255 - self.mean) / self.std, self.labels[index]
