"""Test-time inference for fine-grained recognition: flip averaging and a second look at the bird.

A bird is told apart by its bill, eye ring or wing bar, often a small part of the photograph. "Look twice"
classifies the image, finds the object in the last feature map, crops that region out of the same input,
resizes it to the full input size, classifies the crop, and averages the two passes' logits:

1. energy map: the sum over channels of the last feature map (C, h, w) -> (h, w). Features of an
   ImageNet-trained network fire on objects, not on sky or water, so thresholding this map at its mean
   selects the object (SCDA, Wei et al. 2017, "Selective Convolutional Descriptor Aggregation for
   Fine-Grained Image Retrieval");
2. the box: the smallest rectangle of feature cells that holds every selected cell;
3. the zoom: crop-and-resize as two matrix products, `crop = Wy @ image @ Wx^T`, with bilinear weights
   (a tent function of the distance to each source pixel). It needs no grid-sample or ROI-align operator, so
   the whole two-pass model exports to ONNX and ExecuTorch as it is;
4. the answer: the mean of the two passes' logits, as WS-DAN (Hu et al. 2019, "See Better Before Looking
   Closer") averages its raw-image and attention-crop predictions; RA-CNN (Fu et al. 2017) zooms the same way.

No boxes are used at test time. `--test-hflip` also averages each pass with its mirror image. The test resolution
(FixRes, Touvron et al. 2019: objects look larger after a random-resized-crop in training than after a centre
crop in test, so testing at a higher resolution than training helps) is a preprocessing choice and lives in
`Inference.resolution`. A run records its choices (`RunConfig.test_scale`, `test_hflip`, `look_twice`) in
its model's card (`mobilenet.card.ModelCard.inference`); every command wraps the model with `inference.wrap`.
"""

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from mobilenet.common import MobileNetBase


@dataclass(frozen=True)
class Inference:
    """How a trained model is applied to a test image."""

    resolution: int
    hflip: bool = False
    look_twice: bool = False

    def wrap(self, model: nn.Module) -> nn.Module:
        """`model` itself for a single plain pass, else a `LookTwice` around it."""
        if self.passes == 1:
            return model
        # Any MobileNet, or its `optimize_for_inference` copy: both have forward_features / forward_head.
        wrapped = LookTwice(cast(MobileNetBase, model), hflip=self.hflip, look_twice=self.look_twice)
        return wrapped.train(model.training)  # the wrapper is in the mode of the model it wraps

    @property
    def passes(self) -> int:
        """Forward passes per image (the cost multiplier over one plain pass)."""
        return (2 if self.hflip else 1) * (2 if self.look_twice else 1)

    def describe(self, view: str = "centre") -> str:
        extras = [name for name, on in (("flip-averaged", self.hflip), ("look-twice", self.look_twice)) if on]
        return ", ".join([f"{view} view at {self.resolution}px", *extras])


def sampling_matrix(start: torch.Tensor, end: torch.Tensor, size_out: int, size_in: int) -> torch.Tensor:
    """Bilinear resampling weights (N, size_out, size_in) that map pixels [start, end) of each of N rows of
    length `size_in` onto `size_out` evenly spaced samples (pixel centres; edges in pixel units)."""
    step = (end - start) / size_out
    centres = start[:, None] + (torch.arange(size_out, dtype=start.dtype, device=start.device) + 0.5) * step[:, None]
    # Pixel-centre coordinates, kept inside the crop (its border pixels repeat), as a crop followed by
    # `F.interpolate(..., mode="bilinear", align_corners=False)` samples.
    source = torch.minimum(torch.maximum(centres - 0.5, start[:, None]), (end - 1)[:, None])
    pixels = torch.arange(size_in, dtype=start.dtype, device=start.device)
    return (1 - (source[:, :, None] - pixels[None, None, :]).abs()).clamp(min=0)


def object_box(energy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Per image, (top, bottom, left, right) in input pixels of the cells whose energy is at least the map's
    mean; `energy` is (N, h, w)."""
    selected = energy >= energy.mean(dim=(1, 2), keepdim=True)
    rows, cols = selected.any(dim=2).float(), selected.any(dim=1).float()  # (N, h), (N, w)
    h, w = rows.shape[1], cols.shape[1]
    first_row, last_row = rows.argmax(1), h - 1 - rows.flip(1).argmax(1)
    first_col, last_col = cols.argmax(1), w - 1 - cols.flip(1).argmax(1)
    cell_h, cell_w = height / h, width / w
    return torch.stack(
        [first_row * cell_h, (last_row + 1) * cell_h, first_col * cell_w, (last_col + 1) * cell_w], dim=1
    ).to(energy.dtype)


def zoom(images: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Crop `box` (N, 4: top, bottom, left, right) out of `images` (N, C, H, W) and resize it to (H, W)."""
    height, width = images.shape[-2:]
    rows = sampling_matrix(box[:, 0], box[:, 1], height, height)  # (N, H, H)
    cols = sampling_matrix(box[:, 2], box[:, 3], width, width)  # (N, W, W)
    return rows[:, None] @ images @ cols[:, None].transpose(-1, -2)


class LookTwice(nn.Module):
    """A classifier with `forward_features` / `forward_head` applied with flip averaging and/or a second,
    zoomed pass on the object (see the module docstring). Input and output are those of the wrapped model."""

    def __init__(self, model: MobileNetBase, *, hflip: bool, look_twice: bool) -> None:
        super().__init__()
        self.model, self.hflip, self.look_twice = model, hflip, look_twice

    def one_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, last feature map) of `x`, logits averaged with the mirror image's when `hflip`."""
        features = self.model.forward_features(x)
        logits = self.model.forward_head(features)
        if self.hflip:
            logits = (logits + self.model(x.flip(-1))) / 2
        return logits, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, features = self.one_pass(x)
        if not self.look_twice:
            return logits
        box = object_box(features.float().sum(1), x.shape[-2], x.shape[-1])
        second, _ = self.one_pass(zoom(x, box.to(x.dtype)))
        return (logits + second) / 2
