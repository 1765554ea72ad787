"""Evaluation metrics on crafted logits whose answers are worked out by hand."""

import math

import pytest
import torch

from evaluation.metrics import classification_metrics, confusion_matrix, expected_calibration_error

NAMES = ["a", "b", "c"]


def crafted():
    # Six images; rows are logits. Predictions (argmax): a, a, b, c, c, a. Labels: a, a, b, b, c, c.
    logits = torch.tensor(
        [
            [3.0, 1.0, 0.0],
            [2.0, 0.0, 1.0],
            [0.0, 2.0, 1.0],
            [0.0, 1.0, 2.0],
            [0.0, 0.0, 5.0],
            [1.0, 0.0, 0.5],
        ]
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return logits, labels


def test_top1_top5_per_class_and_confusion_by_hand():
    logits, labels = crafted()
    m = classification_metrics(logits, labels, NAMES)
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["top5"] == 1.0  # three classes: top-5 covers everything
    assert [r["accuracy"] for r in m["per_class"]] == [1.0, 0.5, 0.5]
    assert [r["count"] for r in m["per_class"]] == [2, 2, 2]
    assert m["mean_class_accuracy"] == pytest.approx(2 / 3)
    assert m["confusion"] == [[2, 0, 0], [0, 1, 1], [1, 0, 1]]
    assert m["most_confused"] == [
        {"true": "b", "predicted": "c", "count": 1},
        {"true": "c", "predicted": "a", "count": 1},
    ]
    nll = -sum(torch.log_softmax(logits.double(), 1)[i, labels[i]].item() for i in range(6)) / 6
    assert m["nll"] == pytest.approx(nll)


def test_top5_with_more_classes_by_hand():
    logits = torch.arange(10.0).repeat(2, 1)  # ranking 9, 8, 7, 6, 5, ...
    labels = torch.tensor([5, 4])  # 5 is in the top five, 4 is not
    m = classification_metrics(logits, labels, [str(i) for i in range(10)])
    assert m["top1"] == 0.0 and m["top5"] == 0.5


def test_ece_by_hand():
    # Top-1 confidences 0.95 (correct), 0.95 (wrong), 0.55 (correct), 0.375 (correct), in 15 bins of 1/15.
    probabilities = torch.tensor(
        [[0.95, 0.05, 0.0], [0.95, 0.05, 0.0], [0.55, 0.45, 0.0], [0.25, 0.375, 0.375]], dtype=torch.float64
    )
    labels = torch.tensor([0, 1, 0, 1])
    ece, bins = expected_calibration_error(probabilities, labels, bins=15)
    # Bin of 0.95: accuracy 0.5, confidence 0.95 -> 2/4 * 0.45; bin of 0.55: 1/4 * |1 - 0.55|; the last
    # row's top class is 1 (the first of the two 0.375s), which is correct: 1/4 * |1 - 0.375|.
    expected = 2 / 4 * 0.45 + 1 / 4 * 0.45 + 1 / 4 * (1 - 0.375)
    assert ece == pytest.approx(expected)
    assert sum(b["count"] for b in bins) == 4 and len(bins) == 15
    assert math.isnan(bins[0]["accuracy"]) and bins[14]["count"] == 2


def test_perfectly_calibrated_has_zero_ece():
    probabilities = torch.tensor([[1.0, 0.0]] * 5, dtype=torch.float64)
    assert expected_calibration_error(probabilities, torch.zeros(5, dtype=torch.long))[0] == 0


def test_confusion_matrix_counts():
    assert confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([1, 1, 0]), 2).tolist() == [[0, 1], [1, 1]]


def test_class_count_mismatch_is_an_error():
    logits, labels = crafted()
    with pytest.raises(ValueError, match="3 outputs but the dataset 2 classes"):
        classification_metrics(logits, labels, ["a", "b"])
