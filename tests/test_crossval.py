"""bench.crossval: the McNemar test by hand, and out-of-fold pooling against train.py's own validation."""

import pytest

import train
from bench.crossval import epoch_curve, mcnemar_p, out_of_fold_correct
from data.cub import CUB200
from tests.conftest import tiny_train_args


@pytest.mark.parametrize(
    ("gained", "lost", "expected"),
    [
        (0, 5, 2 / 32),  # all five discordant images one way: 2 x 0.5^5
        (9, 1, 2 * (1 + 10) / 1024),  # 2 x P(X <= 1), X ~ Binomial(10, 1/2)
        (3, 3, 1.0),
        (0, 0, 1.0),
        (10, 20, 2 * sum(__import__("math").comb(30, i) for i in range(11)) / 2**30),
    ],
)
def test_mcnemar_p_matches_the_binomial_by_hand(gained, lost, expected):
    assert mcnemar_p(gained, lost) == pytest.approx(expected)
    assert mcnemar_p(lost, gained) == pytest.approx(expected)  # two-sided: symmetric


def test_out_of_fold_pooling_covers_every_training_image_and_agrees_with_train_py(tiny_synthetic_root, tmp_path):
    runs = [tmp_path / f"fold{k}" for k in (0, 1)]
    for k, run in enumerate(runs):
        train.main(tiny_train_args(tiny_synthetic_root, run, "--val-fraction", "0.5", "--val-fold", str(k)))
    curve = epoch_curve(runs)
    assert [p["epoch"] for p in curve] == [1, 2]
    assert all(p["images"] == len(CUB200(tiny_synthetic_root, "train")) for p in curve)
    correct = sum(sum(out_of_fold_correct(run / "last.pt", 1.0, False, False)[0]) for run in runs)
    assert correct == curve[-1]["correct"]  # evaluation by hand = the runs' last validation
