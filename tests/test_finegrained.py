"""bench.finegrained on a refit run (no validation split): the test figure is evaluate.py's on the last epoch,
and the table marks the missing validation columns instead of inventing them."""

import json

import evaluate
import train
from bench.finegrained import measure, table
from tests.conftest import tiny_train_args


def test_a_refit_row_is_measured_on_test_only(tiny_synthetic_root, tmp_path):
    run = tmp_path / "refit"
    train.main(tiny_train_args(tiny_synthetic_root, run, "--val-fraction", "0"))
    row = measure("refit", 1, run, [])
    by_hand = evaluate.main(["--checkpoint", str(run / "last.pt"), "--split", "test", "--no-plots"])
    assert row["test_top1"] == by_hand["top1"] and row["val_top1"] is None and row["val_images"] == 0
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["test_top1"] == last["test_top1"]  # best.pt of a refit is its last epoch
    row.update(train_seconds=60.0, epochs=2)
    line = table([row]).splitlines()[-1]
    assert "| - | - (refit) |" in line and f"{row['test_top1']:.2%} ({row['test_images']})" in line
