"""bench.crossval: the McNemar test against scipy's binomial test, and out-of-fold pooling against train.py's own validation."""

import pytest

import train
from bench.crossval import epoch_curve, out_of_fold_correct, paired, validation_images
from data.cub import CUB200
from evaluation.metrics import mcnemar_p, paired_test
from tests.conftest import tiny_train_args


@pytest.mark.parametrize(("gained", "lost"), [(0, 5), (9, 1), (3, 3), (11, 4), (12, 3), (10, 20), (20, 7), (60, 41)])
def test_mcnemar_p_is_scipy_s_exact_two_sided_binomial_test(gained, lost):
    from scipy import stats  # pinned in requirements-dev.txt: an independent reference, never skipped

    expected = stats.binomtest(gained, gained + lost, 0.5, alternative="two-sided").pvalue
    assert mcnemar_p(gained, lost) == pytest.approx(expected, rel=1e-9)
    assert mcnemar_p(lost, gained) == pytest.approx(expected, rel=1e-9)  # two-sided: symmetric
    assert mcnemar_p(0, 0) == 1.0  # no discordant image: no evidence either way
    right_a = [True] * 3 + [False] * gained + [True] * lost
    right_b = [True] * 3 + [True] * gained + [False] * lost
    assert paired_test(right_a, right_b) == {"gained": gained, "lost": lost, "p": mcnemar_p(gained, lost)}


def test_out_of_fold_pooling_covers_every_training_image_and_agrees_with_train_py(tiny_synthetic_root, tmp_path):
    runs = [tmp_path / f"fold{k}" for k in (0, 1)]
    for k, run in enumerate(runs):
        train.main(tiny_train_args(tiny_synthetic_root, run, "--val-fraction", "0.5", "--val-fold", str(k)))
    curve = epoch_curve(runs)
    assert [p["epoch"] for p in curve] == [1, 2]
    assert all(p["images"] == len(CUB200(tiny_synthetic_root, "train")) for p in curve)
    correct = sum(sum(out_of_fold_correct(run / "last.pt", 1.0, False, False)[0]) for run in runs)
    assert correct == curve[-1]["correct"]  # evaluation by hand = the runs' last validation


def test_paired_counts_images_gained_and_lost_by_hand():
    here = [True, True, False, False, True, True]
    there = [True, False, True, False, False, False]
    row = paired("v", here, nll=3.0, baseline=there)
    assert (row["correct"], row["gained"], row["lost"]) == (4, 3, 1)  # images 2, 5, 6 gained; image 3 lost
    assert row["p"] == pytest.approx(2 * (1 + 4) / 16) and row["nll"] == pytest.approx(0.5)
    assert not row["adopted"]  # 3 against 1 is no evidence


def test_recipes_compared_on_the_same_folds_validate_the_same_images(tiny_synthetic_root, tmp_path):
    def run(name, fold, *extra):
        out = tmp_path / name / f"fold{fold}"
        train.main(tiny_train_args(tiny_synthetic_root, out, "--val-fraction", "0.5", "--val-fold", str(fold), *extra))
        return out

    plain, sparse, other_fold = run("a", 0), run("b", 0, "--epochs", "3", "--eval-every", "2"), run("c", 1)
    assert validation_images(plain) == validation_images(sparse)
    assert not set(validation_images(plain)) & set(validation_images(other_fold))  # folds are disjoint
    assert [p["epoch"] for p in epoch_curve([sparse])] == [2, 3]  # epoch 1 was not evaluated
    assert [p["epoch"] for p in epoch_curve([plain, sparse])] == [2]  # only epochs every fold evaluated are pooled
