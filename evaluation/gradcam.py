"""Grad-CAM (Selvaraju et al. 2017) on the last convolutional stage: where the model looks.

The class score's gradient with respect to the last feature map, averaged over space, weights that map's
channels; their ReLU'd sum, upsampled to the input, is the heat map.
"""

import torch
import torch.nn.functional as F

from mobilenet.common import MobileNetBase


def grad_cam(
    model: MobileNetBase, images: torch.Tensor, target: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heat maps in [0, 1] of shape (N, H, W) for `target` classes (default: the predicted ones), and the logits."""
    model.eval()
    features = model.forward_features(images).detach().requires_grad_(True)
    logits = model.forward_head(features)
    if target is None:
        target = logits.argmax(1)
    score = logits.gather(1, target[:, None]).sum()
    (gradient,) = torch.autograd.grad(score, features)
    weights = gradient.mean((2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).detach(), logits.detach()
