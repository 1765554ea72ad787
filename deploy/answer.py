"""The answer at the level the model is sure of, as a field guide gives it (iNaturalist's Seek falls back the same
way): the species when its probability reaches the threshold, else the genus whose species' probabilities sum
to it, else the family, else the order, else only "a bird".

A level's groups come from each class's taxon (`data.taxonomy`); classes without one (the bird file's
background output) belong to no group, and a level no class has (the bird file's families) is skipped. The
threshold is chosen on validation photos (`choose_threshold`, by `python -m bench.birdid`), never on a test set,
and travels in the model's card.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from data.taxonomy import Taxon

LEVELS = ("species", "genus", "family", "order", "bird")


@dataclass(frozen=True)
class Answer:
    level: str  # one of LEVELS
    name: str  # the species' class name, the genus, family or order, or "a bird"
    probability: float  # the summed probability of the classes the answer covers


def _groups(taxa: Sequence[Taxon | None], level: str) -> list[str | None]:
    """Each class's group at `level` (None: the class has no taxon, or the taxon no such group)."""
    return [getattr(t, level) if t is not None else None for t in taxa]


def _membership(groups: list[str | None]) -> tuple[list[str], torch.Tensor]:
    """The level's group names and a (classes, groups) 0/1 matrix: which class is in which group."""
    names = sorted({g for g in groups if g is not None})
    index = {name: j for j, name in enumerate(names)}
    matrix = torch.zeros(len(groups), len(names), dtype=torch.float64)
    for k, group in enumerate(groups):
        if group is not None:
            matrix[k, index[group]] = 1.0
    return names, matrix


def answer(
    probabilities: torch.Tensor, class_names: Sequence[str], taxa: Sequence[Taxon | None], threshold: float
) -> Answer:
    """The answer for one photo's class probabilities (K,)."""
    p = probabilities.double()
    top = int(p.argmax())
    if p[top] >= threshold:
        return Answer("species", class_names[top], float(p[top]))
    for level in LEVELS[1:-1]:
        names, matrix = _membership(_groups(taxa, level))
        if names:
            sums = p @ matrix
            best = int(sums.argmax())
            if sums[best] >= threshold:
                return Answer(level, names[best], float(sums[best]))
    return Answer("bird", "a bird", float(p.sum()))


def answer_levels(
    probabilities: torch.Tensor, labels: torch.Tensor, taxa: Sequence[Taxon | None], threshold: float
) -> dict:
    """Over photos (N, K) with their true classes: the share answered at each level, how often the answer is right
    at its level ("a bird" is always right for a bird photo, so it is counted apart), and the right share of
    the answers more specific than "a bird"."""
    p = probabilities.double()
    n = len(labels)
    level_of = torch.full((n,), len(LEVELS) - 1)
    right = torch.ones(n, dtype=torch.bool)
    undecided = torch.ones(n, dtype=torch.bool)
    confidence, predicted = p.max(1)
    species = undecided & (confidence >= threshold)
    level_of[species], right[species] = 0, (predicted == labels)[species]
    undecided &= ~species
    for depth, level in enumerate(LEVELS[1:-1], 1):
        groups = _groups(taxa, level)
        names, matrix = _membership(groups)
        if not names:
            continue
        sums = p @ matrix
        best_sum, best = sums.max(1)
        here = undecided & (best_sum >= threshold)
        position = {name: j for j, name in enumerate(names)}
        truth = torch.tensor([position.get(groups[int(y)] or "", -1) for y in labels])
        level_of[here], right[here] = depth, (best == truth)[here]
        undecided &= ~here
    specific = level_of < len(LEVELS) - 1
    return {
        "threshold": threshold,
        "share": {level: float((level_of == i).double().mean()) for i, level in enumerate(LEVELS)},
        "right": float(right.double().mean()),
        "right_specific": float(right[specific].double().mean()) if specific.any() else None,
        "right_by_level": {
            level: float(right[level_of == i].double().mean())
            for i, level in enumerate(LEVELS)
            if (level_of == i).any()
        },
    }


def choose_threshold(
    probabilities: torch.Tensor, labels: torch.Tensor, taxa: Sequence[Taxon | None], *, target: float
) -> tuple[float, dict]:
    """The smallest threshold on a 0.01 grid (the most species answers) at which the answers are right at their
    level at least `target` of the time on these (validation) photos, and the summary there."""
    for step in range(1, 101):
        summary = answer_levels(probabilities, labels, taxa, step / 100)
        if summary["right"] >= target:
            return step / 100, summary
    return 1.0, answer_levels(probabilities, labels, taxa, 1.0)
