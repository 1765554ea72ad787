"""Fine-grained ablation on cub20: `python -m bench.finegrained` (resumable; about 1.5 h on 2 cores).

Each technique of `mobilenet.tta` and `training.distill` gets its own row, measured the same way: a run
trained by `train.py` (from Google's V2 1.0/224 file unless the row says otherwise, seed 0, the validation
split of `--val-fraction`), its `best.pt` (chosen on validation top-1 during training), evaluated by
`evaluate.py` on the validation and the test split with the row's test-time inference. Choices are made on
validation only; the test column is reported, never used. Test-time choices are compared on the validation
top-1 of `last.pt` (the final epoch): `best.pt` was itself picked by the one-pass validation top-1, which
biases its validation figure towards the one-pass inference. Latency is the batch-1 CPU time of the
whole inference (all its passes) as evaluate.py measures it.

Rows that change only the test-time inference share their run. The `default` run is the default
fine-tuning command as it stood before fine-tuning became a refit (`python train.py --pretrained
mobilenet_v2_1.0_224_quant.tflite --data-root cub20 --cache --val-fraction 0.1`), timed from start to end.
The students are V1 0.25/128 from Google's file, alone and with `--teacher` the default run's `best.pt`.

Writes `bench/studies/finegrained_cub20.{json,md}`.
"""

import json
from pathlib import Path

import cli
import evaluate
from atomicfile import write_atomically
from bench.harness import markdown_table, study_inputs, study_parser, train_run, without_paths, write_study
from cli import UsageError
from data.species_map import read_map

V2_FILE = "mobilenet_v2_1.0_224_quant.tflite"
BIRD_FILE = "mobilenet_v2_1.0_224_inat_bird_quant.tflite"  # `--pretrained inat-birds`
STUDENT_FILE = "mobilenet_v1_0.25_128_quant.tflite"
PLAIN = ["--no-test-hflip", "--no-look-twice"]  # evaluate.py: one pass
TWICE_FLIP = ["--test-hflip", "--look-twice"]
PLAIN_RUN = ["--test-scale", "1", "--no-test-hflip", "--no-look-twice"]  # train.py: validate with one pass
# run name: (Google file, train.py flags). The ablation runs take 10 epochs (as bench.study); `default` is the
# default fine-tuning recipe as it stands, and the students follow it.
REFIT = ["--val-fraction", "0", *PLAIN_RUN]  # the run validates nothing; evaluate.py's flags set the inference
PATIENT = ["--epochs", "60"]
MIXUP = ["--mixup", "1"]
# Every held-out row keeps 10% for validation and validates with one plain pass (fine-tuning's defaults before
# bench.crossval chose the refit and look twice + flip); evaluate.py's flags set each row's test-time inference.
HELD_OUT = ["--val-fraction", "0.1", *PLAIN_RUN]
RUNS: dict[str, tuple[str, list[str]]] = {
    "v2-224": (V2_FILE, ["--epochs", "10", *HELD_OUT]),
    "v2-320": (V2_FILE, ["--epochs", "10", "--resolution", "320", *HELD_OUT]),
    "v2-224-bbox": (V2_FILE, ["--epochs", "10", "--crop", "bbox", *HELD_OUT]),
    "default": (V2_FILE, HELD_OUT),
    "student": (STUDENT_FILE, HELD_OUT),
    "student-distilled": (STUDENT_FILE, [*HELD_OUT, "--teacher", "{runs}/default/best.pt"]),
    # The refit protocol (bench.crossval): all training images, the last epoch; nothing is chosen, so there is
    # no validation column. The students keep one pass (a phone's budget). The distilled student follows
    # Beyer et al. 2022's function matching, fixed before any run: the teacher's soft targets only (no labels),
    # aggressive mixup, 3x the epochs. Its twins train as long, alone: with the same mixup, and with the
    # default augmentation (the better twin is the reference).
    "refit": (V2_FILE, REFIT),
    "student-refit": (STUDENT_FILE, [*REFIT, *PATIENT]),
    "student-refit-mixup": (STUDENT_FILE, [*REFIT, *PATIENT, *MIXUP]),
    "student-refit-distilled": (
        STUDENT_FILE,
        [*REFIT, *PATIENT, *MIXUP, "--teacher", "{runs}/refit/last.pt", "--distill-weight", "1"],
    ),
    # The bird expert's start (Google's V2 trained on 964 iNaturalist bird species), under the refit protocol and
    # the ImageNet-chosen fine-tuning recipe: its head transplanted or fresh (the bird recipe's choice), and
    # untrained (zero-shot, transplanted).
    "bird-zero-shot": (BIRD_FILE, [*REFIT, "--epochs", "0", "--transplant-head"]),
    "bird-refit": (BIRD_FILE, [*REFIT, "--transplant-head"]),
    "bird-refit-fresh": (BIRD_FILE, [*REFIT, "--no-transplant-head"]),
    "student-refit-bird-distilled": (
        STUDENT_FILE,
        [*REFIT, *PATIENT, *MIXUP, "--teacher", "{runs}/bird-refit-fresh/last.pt", "--distill-weight", "1"],
    ),
}
# label, run, evaluate.py flags (the run's own inference unless they override it)
ROWS: list[tuple[str, str, list[str]]] = [
    ("V2 1.0/224, 10 epochs, tested at 224 (baseline)", "v2-224", ["--test-resolution", "224", *PLAIN]),
    ("+ test at 256 (FixRes)", "v2-224", ["--test-resolution", "256", *PLAIN]),
    ("+ test at 288 (FixRes)", "v2-224", ["--test-resolution", "288", *PLAIN]),
    ("+ flip averaging (at 224)", "v2-224", ["--test-resolution", "224", "--test-hflip", "--no-look-twice"]),
    ("+ look twice (at 224)", "v2-224", ["--test-resolution", "224", "--no-test-hflip", "--look-twice"]),
    ("+ look twice + flip (at 224)", "v2-224", ["--test-resolution", "224", "--test-hflip", "--look-twice"]),
    ("+ look twice + flip, test at 256", "v2-224", ["--test-resolution", "256", "--test-hflip", "--look-twice"]),
    ("fine-tune at 320, test at 320", "v2-320", ["--test-resolution", "320", *PLAIN]),
    ("fine-tune at 320, test at 384 (FixRes)", "v2-320", ["--test-resolution", "384", *PLAIN]),
    ("fine-tune at 320, look twice + flip", "v2-320", ["--test-resolution", "320", "--test-hflip", "--look-twice"]),
    ("oracle: ground-truth boxes in training and test", "v2-224-bbox", ["--view", "bbox", *PLAIN]),
    ("held-out recipe (the default before the refit: --val-fraction 0.1, one pass)", "default", []),
    ("V1 0.25/128 student, fine-tuned alone", "student", []),
    ("V1 0.25/128 student, distilled from the held-out run", "student-distilled", []),
    ("refit: the default recipe on all training images, last epoch, one pass", "refit", PLAIN),
    (
        "refit, look twice + flip (the default recipe: chosen by bench.crossval)",
        "refit",
        ["--test-hflip", "--look-twice"],
    ),
    ("V1 0.25/128 student, 60 epochs, alone (refit)", "student-refit", []),
    ("V1 0.25/128 student, 60 epochs, mixup 1, alone (refit)", "student-refit-mixup", []),
    (
        "V1 0.25/128 student, 60 epochs, mixup 1, distilled from the refit (function matching)",
        "student-refit-distilled",
        [],
    ),
    ("bird start, zero-shot: the transplanted head, no training, one pass", "bird-zero-shot", PLAIN),
    ("bird start, zero-shot, look twice + flip", "bird-zero-shot", ["--test-hflip", "--look-twice"]),
    ("bird start, refit, transplanted head, one pass", "bird-refit", PLAIN),
    ("bird start, refit, transplanted head, look twice + flip", "bird-refit", TWICE_FLIP),
    ("bird start, refit, fresh head, one pass (the bird recipe: the README's bird command)", "bird-refit-fresh", PLAIN),
    ("bird start, refit, fresh head, look twice + flip", "bird-refit-fresh", TWICE_FLIP),
    (
        "V1 0.25/128 student, 60 epochs, mixup 1, distilled from the bird recipe's refit (function matching)",
        "student-refit-bird-distilled",
        [],
    ),
]


def measure(label: str, number: int, run: Path, flags: list[str]) -> dict:
    """evaluate.py with the row's inference on the validation split (`best.pt`, `last.pt`) and the test split
    (`best.pt`)."""
    result: dict = {"label": label, "run": run.name, "evaluate_flags": flags}
    refit = json.loads((run / "config.json").read_text())["val_fraction"] == 0  # best.pt is the last epoch
    measured = [("test", "best.pt")] if refit else [("val", "best.pt"), ("val", "last.pt"), ("test", "best.pt")]
    if refit:
        result.update(val_top1=None, val_last_top1=None, val_images=0)
    for split, checkpoint in measured:
        key = split if checkpoint == "best.pt" else f"{split}_last"
        common = ["--checkpoint", str(run / checkpoint), "--split", split, "--no-plots", "--force"]
        common += ["--latency-rounds", "10" if split == "test" else "1"]  # latency: from the test evaluation
        m = evaluate.main([*common, "--out", str(run / f"eval-{key}-row{number}"), *flags])
        result[f"{key}_top1"], result[f"{split}_images"] = m["top1"], m["count"]
        if split == "test":
            mapped = mapped_classes(m["per_class"])
            result.update(
                test_top1_mapped=group_top1(m["per_class"], mapped),
                test_top1_unmapped=group_top1(m["per_class"], [not x for x in mapped]),
                inference=m["inference"],
                view=m["view"],
                macs=m["macs"],
                latency_ms=m["latency_ms_batch1"],
                top5=m["top5"],
                params=m["params"],
            )
    return result


def mapped_classes(per_class: list[dict]) -> list[bool]:
    """Which classes the bird expert's head names (`data/cub200_inat_birds.tsv`), in `per_class` order."""
    known = read_map()
    return [c["class"] in known and known[c["class"]].level != "none" for c in per_class]


def group_top1(per_class: list[dict], members: list[bool]) -> float | None:
    """Top-1 over the test images of the classes in `members` (None when they have no image)."""
    right = sum(round(c["accuracy"] * c["count"]) for c, m in zip(per_class, members) if m and c["count"])
    total = sum(c["count"] for c, m in zip(per_class, members) if m)
    return right / total if total else None


def table(rows: list[dict]) -> str:
    header = ["row", "test-time inference", "val top-1 (last.pt)", "val top-1 (best.pt)", "test top-1 (best.pt)"]
    header += ["MACs", "mapped / unmapped classes (test)", "CPU ms (batch 1)", "training"]
    cells = []
    for r in rows:
        wall = f", {r['wall_seconds'] / 60:.1f} min wall" if r.get("wall_seconds") else ""
        val_last = "-" if r["val_top1"] is None else f"{r['val_last_top1']:.2%}"
        val_best = "- (refit)" if r["val_top1"] is None else f"{r['val_top1']:.2%} ({r['val_images']})"
        groups = " / ".join(
            "-" if r.get(k) is None else f"{r[k]:.2%}" for k in ("test_top1_mapped", "test_top1_unmapped")
        )
        cells.append(
            [r["label"], r["inference"], val_last, val_best, f"{r['test_top1']:.2%} ({r['test_images']})"]
            + [f"{r['macs'] / 1e6:.0f}M", groups, f"{r['latency_ms']:.1f}"]
            + [f"{r['epochs']} ep, {r['train_seconds'] / 60:.1f} min{wall}"]
        )
    return markdown_table(header, "llrrrrrrr", cells)


def main(argv: list[str] | None = None) -> list[dict]:
    p = study_parser("The fine-grained ablation on cub20 (resumable).", "finegrained")
    p.add_argument("--only", nargs="*", default=None, help="measure only these runs (default: all)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(RUNS))
    if unknown:
        raise UsageError(f"--only {unknown[0]}: no such run (runs: {', '.join(RUNS)})")
    data_root, weights = study_inputs(args, "bench.finegrained")
    runs, out = Path(args.runs), Path(args.out)
    results_path = out / "finegrained_cub20.json"
    done = {r["label"]: r for r in json.loads(results_path.read_text())} if results_path.is_file() else {}
    for number, (label, name, flags) in enumerate(ROWS, 1):
        if (label in done and args.only is None) or (args.only is not None and name not in args.only):
            continue
        timing_path = runs / name / "timing.json"
        if not timing_path.is_file():
            file, train_flags = RUNS[name]  # not `flags`: those are the row's evaluate.py flags
            flags_here = ["--pretrained", str(weights / file), *(f.format(runs=runs) for f in train_flags)]
            timing = train_run(runs / name, data_root, flags_here)
            write_atomically(timing_path, json.dumps(timing, indent=2))
        done[label] = measure(label, number, runs / name, flags) | json.loads(timing_path.read_text())
        print(f"{label}: test {done[label]['test_top1']:.2%}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        kept = [done[label] for label, _, _ in ROWS if label in done]
        write_atomically(results_path, json.dumps(kept, indent=2))
    rows = [done[label] for label, _, _ in ROWS if label in done]
    for row in rows:  # no machine paths in committed results
        row["command"] = without_paths(row["command"], {"RUNS": runs, "WEIGHTS": weights, "CUB20": data_root})
    text = "# Fine-grained techniques on cub20 (`python -m bench.finegrained`)\n\n" + table(rows)
    write_study(out, "finegrained_cub20", rows, text)
    print(table(rows))
    return rows


if __name__ == "__main__":
    cli.run("bench.finegrained", main)
