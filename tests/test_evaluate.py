"""evaluate.py on a small trained run: metrics, every picture (non-empty PNG of the expected size),
V1-versus-V2 comparison, and one-line errors."""

import json
import subprocess
import sys

import pytest
from PIL import Image

import evaluate
import train
from tests.conftest import REPO, tiny_train_args

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

PICTURES = {  # file: (width, height) = figure inches x 100 DPI
    "confusion.png": (1000, 900),
    "per_class_accuracy.png": (1000, 700),
    "reliability.png": (600, 700),
    "misclassified.png": (1200, 330 * 3),
    "training_curves.png": (1500, 450),
    "gradcam.png": (1200, 360 * 2),  # two rows of 3.6 in: room for two-line captions at 11 pt
}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tiny_synthetic_root):
    runs = tmp_path_factory.mktemp("runs")
    common = tiny_train_args(tiny_synthetic_root, runs / "unused")  # the later --arch, --width, --out win
    train.main([*common, "--arch", "v2", "--width", "0.35", "--out", str(runs / "v2")])
    train.main([*common, "--arch", "v1", "--width", "0.25", "--out", str(runs / "v1")])
    return runs


def test_metrics_and_pictures(two_runs, tmp_path, capsys):
    out = tmp_path / "eval"
    args = [
        "--checkpoint",
        str(two_runs / "v2" / "best.pt"),
        "--out",
        str(out),
        "--workers",
        "0",
        "--gallery",
        "12",
        "--gradcam",
        "8",
        "--latency-rounds",
        "2",
    ]
    metrics = evaluate.main(args)
    saved = json.loads((out / "metrics.json").read_text())
    for key in (
        "top1",
        "top5",
        "mean_class_accuracy",
        "per_class",
        "confusion",
        "most_confused",
        "nll",
        "ece",
        "params",
        "macs",
        "images_per_s",
    ):
        assert key in saved
    assert saved["count"] == 12 and len(saved["per_class"]) == 4 and sum(map(sum, saved["confusion"])) == 12
    # The same test top-1 as the training run recorded for this checkpoint (same centre view).
    rows = [json.loads(line) for line in (two_runs / "v2" / "metrics.jsonl").read_text().splitlines()]
    chosen = max(rows, key=lambda r: (r["val_top1"], r["epoch"]))  # best.pt: the last epoch with the best val
    assert saved["top1"] == pytest.approx(chosen["test_top1"])
    assert metrics["arch"] == "v2" and metrics["params"] > 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "parameters" in printed
    pairs = max(1, min(4, len(saved["most_confused"])))  # one row per confused pair shown
    for name, (width, height) in {**PICTURES, "confused_pairs.png": (700, 320 * pairs)}.items():
        path = out / name
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (width, height), (name, image.size)
            # Drawn, not blank: a figure with nothing on it has a handful of colours.
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is None or len(colours) > 16, (name, len(colours or []))


def test_views_flip_averaging_and_test_resolution_change_what_the_model_sees(two_runs, tmp_path):
    """Each test-time choice changes the model's answers (its NLL on the same images), and costs what it says:
    flip averaging two passes, a larger test resolution up to the ratio of the areas."""
    base = ["--checkpoint", str(two_runs / "v2" / "best.pt"), "--workers", "0", "--no-plots", "--latency-rounds", "1"]

    def run(name: str, *flags: str) -> dict:
        return evaluate.main([*base, "--out", str(tmp_path / name), *flags])

    center, full, bbox = run("c"), run("f", "--view", "full"), run("b", "--view", "bbox")
    flipped, larger = (
        run("ff", "--view", "full", "--test-hflip"),
        run("fl", "--view", "full", "--test-resolution", "64"),
    )
    nlls = [m["nll"] for m in (center, full, bbox, flipped, larger)]
    assert len(set(nlls)) == 5, nlls  # every choice changed the answers
    assert center["count"] == full["count"] == bbox["count"] == flipped["count"]
    assert flipped["macs"] == 2 * full["macs"]  # the mirror image: a second pass
    # the convolutions' cost grows with the area (1.78x), the classifier's does not
    assert 1.4 < larger["macs"] / full["macs"] < (64 / 48) ** 2


def test_compare_v1_and_v2(two_runs, tmp_path):
    out = tmp_path / "compare"
    rows = evaluate.main(
        [
            "--compare",
            str(two_runs / "v1" / "best.pt"),
            str(two_runs / "v2" / "best.pt"),
            "--out",
            str(out),
            "--workers",
            "0",
            "--latency-rounds",
            "2",
        ]
    )
    assert [r["arch"] for r in rows] == ["v1", "v2"]
    assert rows[0]["macs_m"] < rows[1]["macs_m"]  # V1 0.25 is cheaper than V2 0.35
    table = (out / "compare.md").read_text()
    assert "| v1 0.25/48 |" in table and "| v2 0.35/48 |" in table
    for name in ("accuracy_vs_macs.png", "accuracy_vs_latency.png"):
        with Image.open(out / name) as image:
            assert image.size == (800, 600)


def test_errors_are_one_line(two_runs, tmp_path, tiny_synthetic_root):
    from data.synthetic import generate

    other = generate(tmp_path / "other", num_classes=3, images_per_class=2, image_size=48)
    cases = [
        (["--checkpoint", str(two_runs / "v2" / "best.pt"), "--data-root", str(other)], "trained on 4 classes"),
        (["--checkpoint", str(tmp_path / "missing.pt")], "missing.pt: no such checkpoint"),
    ]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((two_runs / "v2" / "best.pt").read_bytes()[:1000])
    cases.append((["--checkpoint", str(truncated)], "truncated.pt: not a readable checkpoint"))
    for args, message in cases:
        result = subprocess.run(
            [sys.executable, "evaluate.py", *args, "--out", str(tmp_path / "x")],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
