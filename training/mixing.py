"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) on a batch, with soft targets.

With both enabled, each batch uses one of the two with equal probability (as timm does). Targets become
label-smoothed one-hot vectors mixed with the same weight as the images; for CutMix the weight is the
exact pasted area.
"""

import numpy as np
import torch


def one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    out.scatter_(1, labels[:, None], 1 - smoothing + off)
    return out


def mix_batch(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, mixup: float, cutmix: float, smoothing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return mixed images and soft targets; unchanged images (soft targets) when both alphas are 0."""
    targets = one_hot(labels, num_classes, smoothing)
    use_cutmix = cutmix > 0 and (mixup <= 0 or torch.rand(1).item() < 0.5)
    alpha = cutmix if use_cutmix else mixup
    if alpha <= 0:
        return images, targets
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,)).item())).beta(alpha, alpha))
    perm = torch.randperm(images.shape[0], device=images.device)
    if use_cutmix:
        height, width = images.shape[-2:]
        cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
        cy, cx = int(torch.randint(0, height, (1,))), int(torch.randint(0, width, (1,)))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        images = images.clone()
        images[:, :, y0:y1, x0:x1] = images[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (height * width)
    else:
        images = lam * images + (1 - lam) * images[perm]
    return images, lam * targets + (1 - lam) * targets[perm]


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft target rows (label smoothing, mixup, CutMix), averaged over the batch."""
    return torch.sum(-targets * torch.log_softmax(logits.float(), dim=1), dim=1).mean()
