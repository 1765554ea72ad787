"""RULE.md's fifth candidate: the bird expert's frozen probe and its fine-tuned refit, their probabilities averaged.

    python -m bench.average --data-root DIR/CUB_200_2011

Validation (chooses): a probe fitted on the rule's 4,994 images (`train.py --probe-head --epochs 0 --val-fraction
0.1667`, run here into RUNS/probe-val when missing) and `candidate-lpft-short`, on their 1,000 held-out images.
Test (reports, once): `probe-bird` and `bird-refit`, on the 5,794 test images, with an exact McNemar test
against `probe-bird`. Every model in one plain pass at 224 px (their cards'). Writes OUT/average.json.
"""

import argparse
import json
from pathlib import Path

import torch

import train
from atomicfile import write_atomically
from bench.cub200 import BIRD, CANDIDATE, OUT, split_predictions
from bench.harness import REPO, without_paths
from cli import run
from evaluation.metrics import paired_test

MARGIN = 10  # RULE.md: adopted only if it beats both on validation by at least 10 of the 1,000 images


def top1(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probabilities.argmax(1) == labels).double().mean())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, help="the full CUB_200_2011 folder")
    p.add_argument("--weights", default=str(REPO.parent / "shared" / "weights"), help="Google's .tflite files")
    p.add_argument("--runs", default=str(REPO / "runs" / "cub200"), help="the queue's run folders")
    p.add_argument("--out", default=str(OUT), help="folder for average.json")
    args = p.parse_args(argv)
    runs, out = Path(args.runs), Path(args.out)
    probe_val = runs / "probe-val"
    command = ["--pretrained", str(Path(args.weights) / BIRD), "--data-root", args.data_root, "--cache"]
    command += ["--out", str(probe_val), "--no-progress", "--probe-head", "--epochs", "0", *CANDIDATE.split()]
    if not (probe_val / "last.pt").is_file():
        train.main([*command, "--force"])
    probabilities, labels = {}, {}
    for name, run_dir, split in (
        ("probe", probe_val, "val"),
        ("fine-tuned", runs / "candidate-lpft-short", "val"),
        ("probe-bird", runs / "probe-bird", "test"),
        ("bird-refit", runs / "bird-refit", "test"),
    ):
        logits, labels[name] = split_predictions(run_dir / "last.pt", split)
        probabilities[name] = logits.softmax(1)
    assert torch.equal(labels["probe"], labels["fine-tuned"]) and torch.equal(
        labels["probe-bird"], labels["bird-refit"]
    )
    val_labels, test_labels = labels["probe"], labels["probe-bird"]
    val_average = (probabilities["probe"] + probabilities["fine-tuned"]) / 2
    validation = {
        "probe": top1(probabilities["probe"], val_labels),
        "fine-tuned": top1(probabilities["fine-tuned"], val_labels),
        "average": top1(val_average, val_labels),
        "images": len(val_labels),
    }
    best_single = max(validation["probe"], validation["fine-tuned"])
    adopted = (validation["average"] - best_single) * len(val_labels) >= MARGIN - 1e-9
    test_average = (probabilities["probe-bird"] + probabilities["bird-refit"]) / 2
    right = {name: (probabilities[name].argmax(1) == test_labels).tolist() for name in ("probe-bird", "bird-refit")}
    average_right = (test_average.argmax(1) == test_labels).tolist()
    result = {
        "command": "python -m bench.average --data-root CUB200",
        "probe_val_command": "python train.py " + " ".join(command),
        "validation": validation,
        "adopted": bool(adopted),
        "test": {
            "probe-bird": top1(probabilities["probe-bird"], test_labels),
            "bird-refit": top1(probabilities["bird-refit"], test_labels),
            "average": top1(test_average, test_labels),
            "average_top5": float((test_average.topk(5, dim=1).indices == test_labels[:, None]).any(1).double().mean()),
            "images": len(test_labels),
            "average_vs_probe": paired_test(right["probe-bird"], average_right),
        },
    }
    folders = {"CUB200": Path(args.data_root).resolve(), "WEIGHTS": Path(args.weights).resolve(), "RUN": runs.resolve()}
    write_atomically(out / "average.json", without_paths(json.dumps(result, indent=1), folders))
    v, t = result["validation"], result["test"]
    print(
        f"validation ({v['images']}): probe {v['probe']:.2%}, fine-tuned {v['fine-tuned']:.2%}, average "
        f"{v['average']:.2%}: {'adopted' if adopted else 'not adopted'} (margin {MARGIN} images)"
    )
    paired = t["average_vs_probe"]
    print(
        f"test ({t['images']}): probe-bird {t['probe-bird']:.2%}, bird-refit {t['bird-refit']:.2%}, average "
        f"{t['average']:.2%} (top-5 {t['average_top5']:.2%}); against the probe +{paired['gained']} "
        f"-{paired['lost']}, p = {paired['p']:.2g}"
    )
    return result


if __name__ == "__main__":
    run("bench.average", main)
