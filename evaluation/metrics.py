"""Classification metrics from logits: what a fine-grained classifier is judged by.

Top-1/top-5, mean per-class accuracy (CUB's classes are nearly balanced, but a subset may not be), the
confusion matrix and its most-confused pairs, negative log-likelihood, and the expected calibration error
of Guo et al. 2017 (15 equal-width confidence bins, |accuracy - confidence| weighted by bin size).
"""

import math

import numpy as np
import torch


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """counts[true, predicted]."""
    flat = labels.long() * num_classes + predictions.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def expected_calibration_error(
    probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15
) -> tuple[float, list[dict]]:
    """ECE over `bins` equal-width bins of the top-1 confidence, and the per-bin table (for the diagram)."""
    confidence, predicted = probabilities.max(1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    ece, table = 0.0, []
    n = len(labels)
    for i in range(bins):
        low, high = edges[i].item(), edges[i + 1].item()
        # Bins are (low, high]; the first also takes confidence 0.
        in_bin = (confidence > low) & (confidence <= high) if i else (confidence <= high)
        count = int(in_bin.sum())
        if count:
            accuracy = correct[in_bin].mean().item()
            mean_confidence = confidence[in_bin].double().mean().item()
            ece += count / n * abs(accuracy - mean_confidence)
        else:
            accuracy = mean_confidence = float("nan")
        table.append({"low": low, "high": high, "count": count, "accuracy": accuracy, "confidence": mean_confidence})
    return ece, table


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, class_names: list[str], top_pairs: int = 10
) -> dict:
    """All metrics of `evaluate.py` from (N, K) logits and (N,) labels."""
    logits, labels = logits.double(), labels.long()
    num_classes = len(class_names)
    if logits.shape[1] != num_classes:
        raise ValueError(f"the model has {logits.shape[1]} outputs but the dataset {num_classes} classes")
    probabilities = logits.softmax(1)
    ranked = logits.topk(min(5, num_classes), dim=1).indices
    predicted = ranked[:, 0]
    confusion = confusion_matrix(predicted, labels, num_classes)
    counts = confusion.sum(1)
    per_class = [
        {
            "class": name,
            "count": int(counts[k]),
            "accuracy": (confusion[k, k] / counts[k]).item() if counts[k] else float("nan"),
        }
        for k, name in enumerate(class_names)
    ]
    present = [float(row["accuracy"]) for row in per_class if row["count"]]
    off_diagonal = confusion.clone()
    off_diagonal.fill_diagonal_(0)
    order = off_diagonal.flatten().argsort(descending=True)[:top_pairs]
    pairs = [
        {
            "true": class_names[int(i) // num_classes],
            "predicted": class_names[int(i) % num_classes],
            "count": int(off_diagonal.flatten()[i]),
        }
        for i in order
        if off_diagonal.flatten()[i] > 0
    ]
    ece, bins = expected_calibration_error(probabilities, labels)
    return {
        "count": len(labels),
        "top1": (predicted == labels).double().mean().item(),
        "top5": (ranked == labels[:, None]).any(1).double().mean().item(),
        "mean_class_accuracy": sum(present) / len(present),
        "nll": torch.nn.functional.cross_entropy(logits, labels).item(),
        "ece": ece,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "most_confused": pairs,
        "calibration_bins": bins,
    }


def mcnemar_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: the chance of a split at least this uneven between images a variant
    gains and images it loses, were each discordant image a fair coin."""
    n = gained + lost
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(gained, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_test(right_a: list[bool], right_b: list[bool]) -> dict:
    """Two classifiers on the same images, image by image: the images B gets right and A wrong (`gained`), the
    reverse (`lost`), and the exact McNemar p-value of that split."""
    if len(right_a) != len(right_b):
        raise ValueError(f"paired test: {len(right_a)} against {len(right_b)} images")
    gained = sum(b and not a for a, b in zip(right_a, right_b))
    lost = sum(a and not b for a, b in zip(right_a, right_b))
    return {"gained": gained, "lost": lost, "p": mcnemar_p(gained, lost)}


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of a score that should be higher for `positive` than for `negative` samples: the
    probability that a random positive outscores a random negative, ties counting half (Mann-Whitney U over
    the product of the two counts), from the ranks of all scores."""
    scores = np.concatenate([positive, negative]).astype(np.float64)
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks (1-based) over runs of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + 1 + end) / 2
    n_pos, n_neg = len(positive), len(negative)
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def lookalikes(probabilities: torch.Tensor, labels: torch.Tensor) -> tuple[int, ...]:
    """For each class, the other class the model takes its photos for most: the largest mean probability given
    to another class over the class's held-out photos (a soft confusion matrix, defined even where no photo was
    misclassified); -1 for a class without held-out photos."""
    num_classes = probabilities.shape[1]
    sums = torch.zeros(num_classes, num_classes, dtype=torch.float64).index_add_(0, labels, probabilities.double())
    return lookalikes_of(sums)


def lookalikes_of(sums: torch.Tensor) -> tuple[int, ...]:
    """`lookalikes` from the summed probabilities (true class, predicted class) of held-out photos; a row sums to
    the class's photo count, so an empty row is a class without photos (-1)."""
    others = sums.double().clone().fill_diagonal_(-1.0)
    return tuple(int(j) if n > 0.5 else -1 for j, n in zip(others.argmax(1).tolist(), sums.sum(1).tolist()))
