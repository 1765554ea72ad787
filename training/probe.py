"""A linear probe: multinomial logistic regression on a frozen model's pooled features.

`train.py --probe-head` starts the classifier from it (the "LP" of LP-FT: Kumar et al., *Fine-Tuning can
Distort Pretrained Features and Underperform Out-of-Distribution*, ICLR 2022), and with `--epochs 0` it is the
frozen-feature baseline itself. The features are those of the training images under the test view (no
augmentation). The L2 strength is chosen on a stratified sixth of those images (the probe never sees the
validation or test split), then the probe is refit on all of them.
"""

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mobilenet.common import MobileNetBase

# Strengths of the penalty `l2 * |W|^2` added to the mean cross-entropy, strongest first (each fit starts from
# the previous one's solution).
L2_GRID = tuple(10.0**-e for e in (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0))
HOLDOUT = 6  # one image in HOLDOUT of each class chooses the strength
MAX_ITERATIONS = 300


@torch.no_grad()
def pooled_features(
    model: MobileNetBase,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    channels_last: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(features, labels)` on the CPU: the globally pooled last feature map of every image (what the
    classifier reads), in eval mode."""
    was_training = model.training
    model.eval()
    features, labels = [], []
    for images, targets in batches:
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        features.append(model.pool(model.forward_features(images)).flatten(1).float().cpu())
        labels.append(targets)
    model.train(was_training)
    return torch.cat(features), torch.cat(labels)


def fit_logistic(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    l2: float,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(weight (classes, features), bias)` minimising mean cross-entropy + `l2` * |weight|^2 (bias free) by
    full-batch L-BFGS, from `start` or zeros."""
    weight = torch.zeros(num_classes, features.shape[1]) if start is None else start[0].clone()
    bias = torch.zeros(num_classes) if start is None else start[1].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1, max_iter=MAX_ITERATIONS, history_size=20, line_search_fn="strong_wolfe"
    )

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(F.linear(features, weight, bias), labels) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return weight.detach(), bias.detach()


def stratified_holdout(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A bool mask of round(1/HOLDOUT) of each class's images (at least one of a class with two or more),
    drawn by a generator seeded by (seed, the class)."""
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten().tolist()
        count = min(len(members) - 1, max(1, round(len(members) / HOLDOUT))) if len(members) > 1 else 0
        mask[random.Random(f"{seed}:{label}").sample(members, count)] = True
    return mask


@dataclass(frozen=True)
class Probe:
    """A fitted probe: its head, its L2 strength, and the probabilities it gave the held-out sixth before the
    refit (what it had not seen: the run's look-alikes are read from them)."""

    weight: torch.Tensor
    bias: torch.Tensor
    l2: float
    held_out: torch.Tensor  # (images, classes) probabilities
    held_labels: torch.Tensor


def fit_probe(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, seed: int, log: Callable[[str], None] = print
) -> Probe:
    """The probe: the strength of `L2_GRID` with the best top-1 on a stratified held-out sixth (ties: the
    stronger), then refit on every image at that strength."""
    held = stratified_holdout(labels, seed)
    fit_x, fit_y, held_x, held_y = features[~held], labels[~held], features[held], labels[held]
    best, solution = (-1.0, math.inf, torch.empty(0)), None
    scores = []
    for l2 in L2_GRID:
        solution = fit_logistic(fit_x, fit_y, num_classes, l2, start=solution)
        probabilities = F.linear(held_x, *solution).softmax(1)
        right = (probabilities.argmax(1) == held_y).float().mean().item()
        scores.append(f"{l2:.0e} {right:.3f}")
        if right > best[0]:
            best = (right, l2, probabilities)
    log(f"linear probe: L2 chosen on {len(held_y)} held-out training images: {', '.join(scores)}; {best[1]:.0e}")
    weight, bias = fit_logistic(features, labels, num_classes, best[1])
    return Probe(weight, bias, best[1], best[2], held_y)
