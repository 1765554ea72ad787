"""Choose the fine-tuning recipe by k-fold cross-validation: `python -m bench.crossval` (about 1 h on 2 cores).

cub20 holds 600 training images; a 10% validation split (60 images, one image = 1.7 points) cannot tell a
good recipe from a lucky one. Cross-validation uses every training image for validation once: the default
fine-tuning command is trained on each of `--folds` folds (`train.py --val-fraction 1/k --val-fold i`, seed 0,
validated with one plain pass), and two things are pooled over all out-of-fold images:

1. The validation curve, epoch by epoch: does the last epoch of the schedule do as well as any earlier one?
   If so, the final model may be trained on all training images for the whole schedule and its last epoch
   reported (a refit: nothing left to choose, so no image has to be held out).
2. Each test-time inference of `mobilenet.tta` applied to every fold's last checkpoint, paired image by image
   with one plain pass. A variant is adopted only if it corrects significantly more images than it breaks
   (two-sided exact McNemar test, p < 0.05): a cost in MACs needs evidence, not a lucky sign.

With `--against OTHER_RUNS` (another recipe's folds, e.g. `-- --resolution 320` against the default's), each
variant is also paired with the same variant of the other recipe on the same out-of-fold images, under the same
rule: this recipe is better only if it gains significantly more images than it loses.

The test split is never read. Writes `bench/studies/NAME.{json,md}` (`--name`, default crossval_cub20).
"""

import json
import sys
from pathlib import Path

import torch

import cli
import evaluate
from atomicfile import write_atomically
from bench.finegrained import V2_FILE
from bench.harness import markdown_table, study_inputs, study_parser, train_run, without_paths, write_study
from cli import nonnegative_int, positive_int
from evaluation.metrics import mcnemar_p
from mobilenet import load_checkpoint
from training.config import RunConfig

# name, test resolution as a multiple of the training resolution R, flip averaging, look twice
VARIANTS = [
    ("one pass at R", 1.0, False, False),
    ("one pass at 8R/7 (FixRes)", 8 / 7, False, False),
    ("flip averaging", 1.0, True, False),
    ("look twice", 1.0, False, True),
    ("look twice + flip", 1.0, True, True),
]
SIGNIFICANCE = 0.05


def out_of_fold_correct(checkpoint: Path, scale: float, hflip: bool, look_twice: bool) -> tuple[list[bool], float]:
    """Per validation image of the checkpoint's fold: is the variant's top-1 right; and the summed NLL."""
    model, card, info = load_checkpoint(checkpoint)
    card = card.with_inference(resolution=round(card.resolution * scale), hflip=hflip, look_twice=look_twice)
    dataset = RunConfig.of_checkpoint(info).dataset("val", card.transform(normalize=False))
    applied = card.inference.wrap(model.eval())
    logits, labels = evaluate.predict(applied, dataset, card.normalize(), torch.device("cpu"), batch_size=32, workers=2)
    nll = torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
    return (logits.argmax(1) == labels).tolist(), nll


def validation_images(run: Path) -> list[str]:
    """The run's out-of-fold images, in the order they are evaluated."""
    config = RunConfig.from_dict(json.loads((run / "config.json").read_text()))
    return [str(sample.image_id) for sample in config.dataset("val", None).samples]


def variants_correct(runs: list[Path]) -> dict[str, tuple[list[bool], float]]:
    """Each variant's per-image top-1 over every fold's out-of-fold images, and its summed NLL."""
    per_variant = {}
    for name, scale, hflip, look_twice in VARIANTS:
        correct: list[bool] = []
        nll = 0.0
        for run in runs:
            fold_correct, fold_nll = out_of_fold_correct(run / "last.pt", scale, hflip, look_twice)
            correct += fold_correct
            nll += fold_nll
        per_variant[name] = (correct, nll)
        print(f"{name} ({runs[0].parent.name}): {sum(correct)} / {len(correct)}", flush=True)
    return per_variant


def paired(name: str, correct: list[bool], nll: float, baseline: list[bool]) -> dict:
    """A variant's out-of-fold result paired image by image with a baseline's: gained, lost, McNemar p."""
    gained = sum(c and not b for c, b in zip(correct, baseline, strict=True))
    lost = sum(b and not c for c, b in zip(correct, baseline, strict=True))
    pvalue = mcnemar_p(gained, lost)
    return dict(
        variant=name,
        correct=sum(correct),
        images=len(correct),
        top1=sum(correct) / len(correct),
        nll=nll / len(correct),
        gained=gained,
        lost=lost,
        p=pvalue,
        adopted=gained > lost and pvalue < SIGNIFICANCE,
    )


def epoch_curve(runs: list[Path]) -> list[dict]:
    """Out-of-fold validation top-1 and NLL per epoch, pooled over the folds (each weighted by its images)."""
    curve: dict[int, dict] = {}
    for run in runs:
        images = len(validation_images(run))
        for line in (run / "metrics.jsonl").read_text().splitlines():
            row = json.loads(line)
            if "val_top1" not in row:  # an epoch that was not evaluated (--eval-every)
                continue
            point = curve.setdefault(row["epoch"], {"epoch": row["epoch"], "correct": 0, "images": 0, "nll": 0.0})
            point["correct"] += round(row["val_top1"] * images)
            point["images"] += images
            point["nll"] += row["val_loss"] * images
    total = max(p["images"] for p in curve.values())  # epochs some fold did not evaluate are left out
    return [
        dict(p, top1=p["correct"] / p["images"], nll=p["nll"] / p["images"])
        for _, p in sorted(curve.items())
        if p["images"] == total
    ]


def report(curve: list[dict], variants: list[dict], folds: int, command: str, pooled: list[int] | None = None) -> str:
    last, best = curve[-1], max(curve, key=lambda p: (p["correct"], p["epoch"]))
    lines = [
        "# The fine-tuning recipe, chosen by cross-validation (`python -m bench.crossval`)",
        "",
        f"{folds}-fold cross-validation on cub20's training images, the test split never read. Fold K = "
        f"{'0..' + str(folds - 1) if pooled is None or len(pooled) == folds else ', '.join(map(str, pooled)) + ' only'}: "
        f"`{command}`.",
        "",
        "## Out-of-fold validation by epoch (one plain pass)",
        "",
        markdown_table(
            ["epoch", "correct / images", "val top-1", "val NLL"],
            "rrrr",
            [[p["epoch"], f"{p['correct']} / {p['images']}", f"{p['top1']:.2%}", f"{p['nll']:.4f}"] for p in curve],
        ).rstrip("\n"),
        "",
        f"Best epoch {best['epoch']} ({best['correct']} correct), last epoch {last['epoch']} ({last['correct']}).",
        "",
        "## Test-time inference on each fold's last checkpoint, paired with one plain pass",
        "",
    ]
    header = ["variant", "correct / images", "val top-1", "val NLL", "gained", "lost", "McNemar p", "adopted"]
    cells = [
        [v["variant"], f"{v['correct']} / {v['images']}", f"{v['top1']:.2%}", f"{v['nll']:.4f}", v["gained"]]
        + [v["lost"], f"{v['p']:.3f}", "yes" if v["adopted"] else "no"]
        for v in variants
    ]
    return "\n".join(lines) + "\n" + markdown_table(header, "lrrrrrrl", cells)


def report_against(against: list[dict], other: str) -> str:
    lines = [
        "",
        f"## Against `{other}`: each variant paired with the same variant there, on the same images",
        "",
    ]
    header = ["variant", "correct here / images", "there", "gained", "lost", "McNemar p", "better here"]
    cells = [
        [v["variant"], f"{v['correct']} / {v['images']}", v["correct"] - v["gained"] + v["lost"], v["gained"]]
        + [v["lost"], f"{v['p']:.3f}", "yes" if v["adopted"] else "no"]
        for v in against
    ]
    return "\n".join(lines) + "\n" + markdown_table(header, "lrrrrrl", cells)


def main(argv: list[str] | None = None) -> dict:
    p = study_parser("Cross-validate a fine-tuning recipe on cub20 (resumable).", "crossval")
    p.add_argument("--pretrained", default=None, help=f"Google file to fine-tune (default: WEIGHTS/{V2_FILE})")
    p.add_argument("--folds", type=positive_int, default=5, help="number of folds (default: 5)")
    p.add_argument(
        "--only-folds",
        type=nonnegative_int,
        nargs="+",
        default=None,
        help="train and pool only these folds (default: all): a cheaper, weaker comparison on fewer images",
    )
    p.add_argument("--against", default=None, help="another recipe's fold folders to pair with (default: none)")
    p.add_argument("--name", default="crossval_cub20", help="result file name (default: crossval_cub20)")
    p.add_argument("train_flags", nargs="*", help="extra train.py flags after --, e.g. -- --mixup 0.2")
    args = p.parse_args(argv)
    data_root, weights = study_inputs(args, "bench.crossval")
    pretrained = Path(args.pretrained) if args.pretrained else weights / V2_FILE
    plain = ["--test-scale", "1", "--no-test-hflip", "--no-look-twice"]  # validate each epoch with one pass
    folds = args.only_folds if args.only_folds is not None else list(range(args.folds))
    if not folds or any(not 0 <= k < args.folds for k in folds):
        sys.exit(f"bench.crossval: error: --only-folds must be in 0..{args.folds - 1}, got {folds}")
    runs = [Path(args.runs) / f"fold{k}" for k in folds]
    for k, run in zip(folds, runs):
        if not (run / "timing.json").is_file():
            flags = ["--val-fraction", f"{1 / args.folds:.10g}", "--val-fold", str(k), *plain, *args.train_flags]
            timing = train_run(run, data_root, ["--pretrained", str(pretrained), *flags])
            write_atomically(run / "timing.json", json.dumps(timing, indent=2))
    curve = epoch_curve(runs)
    per_variant = variants_correct(runs)
    baseline, _ = per_variant[VARIANTS[0][0]]
    if sum(baseline) != curve[-1]["correct"]:  # evaluation here and train.py's last validation must agree
        raise RuntimeError(f"one pass: {sum(baseline)} correct here, {curve[-1]['correct']} in the runs' metrics")
    variants = [paired(name, correct, nll, baseline) for name, (correct, nll) in per_variant.items()]
    against = []
    other_name = Path(args.against).name if args.against else None
    if args.against:
        other_runs = [Path(args.against) / f"fold{k}" for k in folds]
        for run, other in zip(runs, other_runs, strict=True):
            if validation_images(run) != validation_images(other):
                raise RuntimeError(f"{run} and {other} do not validate on the same images")
        for name, (other_correct, _) in variants_correct(other_runs).items():
            correct, nll = per_variant[name]
            against.append(paired(name, correct, nll, other_correct))
    timings = [json.loads((run / "timing.json").read_text()) for run in runs]
    command = (
        " ".join(["python", "train.py", *timings[0]["command"].split()[2:]])
        .replace(f"--val-fold {folds[0]}", "--val-fold K")
        .replace(f"/fold{folds[0]} ", "/foldK ")
    )
    command = without_paths(command, {"RUNS": Path(args.runs), "WEIGHTS": pretrained.parent, "CUB20": data_root})
    result = dict(
        folds=args.folds, pooled_folds=folds, command=command, curve=curve, variants=variants, timings=timings
    )
    if args.against:
        result.update(against=other_name, against_variants=against)
    for timing in timings:
        timing.pop("command")
    text = report(curve, variants, args.folds, command, folds)
    if other_name:
        text += report_against(against, other_name)
    write_study(Path(args.out), args.name, result, text)
    print(text)
    return result


if __name__ == "__main__":
    cli.run("bench.crossval", main)
