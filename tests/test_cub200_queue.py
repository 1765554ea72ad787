"""The full-set queue's rule (bench/studies/cub200/RULE.md, written before the candidates ran) applied by code:
hand-worked cases of the choice, and the refit's flags derived from the chosen candidate's."""

import json

from bench.cub200 import CANDIDATES, ROWS, choose, chosen_flags, row_command


def test_the_best_wins_unless_a_shorter_candidate_is_within_five_of_a_thousand_images():
    epochs = {"a": 10, "b": 10, "c": 5, "d": 10}
    assert choose({"a": 0.880, "b": 0.890, "c": 0.870, "d": 0.850}, epochs) == "b"  # c is 20 images behind
    assert choose({"a": 0.880, "b": 0.890, "c": 0.885, "d": 0.850}, epochs) == "c"  # c is 5 behind, 5 epochs
    assert choose({"a": 0.880, "b": 0.890, "c": 0.884, "d": 0.850}, epochs) == "b"  # 6 behind: too far
    assert choose({"a": 0.890, "b": 0.890, "c": 0.800, "d": 0.850}, epochs) == "a"  # a tie of equals: table order


def test_the_refit_takes_the_chosen_candidate_s_flags_on_every_training_image(tmp_path):
    assert chosen_flags(tmp_path) is None  # nothing chosen before every candidate has run
    scores = {
        "candidate-fresh": 0.85,
        "candidate-lpft": 0.90,
        "candidate-lpft-short": 0.897,
        "candidate-transplant": 0.86,
    }
    for name in CANDIDATES:
        row = next(r for r in ROWS if r.name == name)
        epochs = int(row.flags.split("--epochs ")[1].split()[0])
        (tmp_path / f"{name}.json").write_text(json.dumps({"metrics": {"val_top1": scores[name], "epoch": epochs}}))
    flags = chosen_flags(tmp_path)
    assert flags == "--val-fraction 0 --probe-head --lr 0.001 --epochs 5"  # the short LP-FT, 3 images behind
    refit = next(r for r in ROWS if r.name == "bird-refit")
    args = row_command(refit, tmp_path / "cub", tmp_path / "w", tmp_path / "runs" / "bird-refit", tmp_path)
    assert args[-len(flags.split()) :] == flags.split() and "--no-progress" in args
