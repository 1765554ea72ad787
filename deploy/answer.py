"""The answer at the level the model is sure of, as a field guide gives it (iNaturalist's Seek falls back the same
way): the species when its probability reaches the threshold, else the genus whose species' probabilities sum
to it, else the family, else the order, else only "a bird".

A level's groups come from each class's taxon (`data.taxonomy`), gathered once per model (`group_levels`);
classes without one (the bird file's background output) belong to no group, and a level no class has is
skipped. The
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


@dataclass(frozen=True)
class Level:
    """The classes' groups at one level (genus, family or order): the groups' names and a (classes, groups) 0/1
    matrix saying which class is in which; a class without a taxon, or whose taxon has no such group, is in none."""

    name: str
    groups: tuple[str, ...]
    membership: torch.Tensor


def group_levels(taxa: Sequence[Taxon | None]) -> tuple[Level, ...]:
    """The levels above the species that some class has, finest first: built once per model."""
    levels = []
    for level in LEVELS[1:-1]:
        of_class = [getattr(t, level) if t is not None else None for t in taxa]
        names = sorted({g for g in of_class if g is not None})
        if not names:
            continue
        index = {name: j for j, name in enumerate(names)}
        membership = torch.zeros(len(of_class), len(names), dtype=torch.float64)
        for k, group in enumerate(of_class):
            if group is not None:
                membership[k, index[group]] = 1.0
        levels.append(Level(level, tuple(names), membership))
    return tuple(levels)


def answer(
    probabilities: torch.Tensor, class_names: Sequence[str], levels: Sequence[Level], threshold: float
) -> Answer:
    """The answer for one photo's class probabilities (K,), with the model's `group_levels`."""
    p = probabilities.double()
    top = int(p.argmax())
    if p[top] >= threshold:
        return Answer("species", class_names[top], float(p[top]))
    for level in levels:
        sums = p @ level.membership
        best = int(sums.argmax())
        if sums[best] >= threshold:
            return Answer(level.name, level.groups[best], float(sums[best]))
    return Answer("bird", "a bird", float(p.sum()))


def answer_levels(probabilities: torch.Tensor, labels: torch.Tensor, levels: Sequence[Level], threshold: float) -> dict:
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
    for level in levels:
        best_sum, best = (p @ level.membership).max(1)
        here = undecided & (best_sum >= threshold)
        truth_in = level.membership[labels]  # each photo's true class's group, if it has one
        truth = torch.where(truth_in.any(1), truth_in.argmax(1), -1)
        level_of[here], right[here] = LEVELS.index(level.name), (best == truth)[here]
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
    probabilities: torch.Tensor, labels: torch.Tensor, levels: Sequence[Level], *, target: float
) -> tuple[float, dict]:
    """The smallest threshold on a 0.01 grid (the most species answers) at which the answers are right at their
    level at least `target` of the time on these (validation) photos, and the summary there."""
    for step in range(1, 101):
        summary = answer_levels(probabilities, labels, levels, step / 100)
        if summary["right"] >= target:
            return step / 100, summary
    return 1.0, answer_levels(probabilities, labels, levels, 1.0)
