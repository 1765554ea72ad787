"""The full CUB-200-2011 results as a queue: `python -m bench.cub200 --data-root DIR/CUB_200_2011`.

Runs the rows of `ROWS` one at a time, in order, each as `train.py` in its own process and run folder
(`--runs`, default runs/cub200/NAME, log in NAME.log beside it). A row whose result file exists is skipped;
one that stopped part-way resumes from its `last.pt`. So the queue can be stopped at any time and restarted,
from a worktree of one commit (DEVELOPERS.md), and a row's figures are final when its file appears:
`bench/studies/cub200/NAME.json` (the command, every evaluated metric, training and wall time, peak memory and,
for rows others are compared with, which test images the final model gets right, for McNemar tests). Nothing
in the results names a machine path. `--only NAME ...` runs those rows (in queue order). The test split is
reported, never used to choose: the recipe candidates choose on validation (bench/studies/cub200/RULE.md).
"""

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cli
from atomicfile import write_atomically
from bench.harness import REPO, markdown_table, without_paths
from cli import InputError
from evaluation.metrics import paired_test

if TYPE_CHECKING:  # torch loads in the rows' processes, not in the queue's
    import torch

OUT = REPO / "bench" / "studies" / "cub200"
BIRD = "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
IMAGENET_V2 = "mobilenet_v2_1.0_224_quant.tflite"
# The recipe candidates hold out a stratified sixth of the training images (5 of each class's ~30) and are
# judged on validation at their last epoch (the refit protocol keeps the last epoch).
CANDIDATE = "--val-fraction 0.1667"


@dataclass(frozen=True)
class Row:
    name: str
    start: str  # a file of the --weights folder, or for a `module` row its arguments ({runs}, {out}, {data}, {weights})
    flags: str  # train.py's options besides --pretrained, --data-root, --cache and --out ({runs}: the run folders)
    what: str  # start, recipe and protocol, for the tables
    paired: bool = False  # record which test images its final model gets right (McNemar against other rows)
    module: str | None = None  # instead of train.py: `python -m MODULE START`, which writes the row's result file


STUDENT = "mobilenet_v1_0.25_128_quant.tflite"
V1 = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
# The phone budget (as on cub20): 60 epochs, one plain pass.
PATIENT = "--epochs 60 --test-scale 1 --no-test-hflip --no-look-twice"

ROWS = (
    Row("zero-shot", BIRD, "--transplant-head --epochs 0", "bird expert, transplanted head, no training", True),
    Row("probe-bird", BIRD, "--probe-head --epochs 0", "bird expert, linear probe on frozen features", True),
    Row(
        "probe-imagenet-v2",
        IMAGENET_V2,
        "--probe-head --epochs 0 --no-test-hflip --no-look-twice",
        "ImageNet V2 1.0/224, linear probe on frozen features",
        True,
    ),
    # The recipe candidates for the bird expert (the rule: bench/studies/cub200/RULE.md, committed before they ran).
    Row("candidate-fresh", BIRD, f"{CANDIDATE} --epochs 10 --eval-every 10", "bird recipe (fresh head, lr 0.005)"),
    Row(
        "candidate-lpft",
        BIRD,
        f"{CANDIDATE} --probe-head --lr 0.001 --epochs 10 --eval-every 10",
        "LP-FT: probe head, then lr 0.001",
    ),
    Row(
        "candidate-lpft-short",
        BIRD,
        f"{CANDIDATE} --probe-head --lr 0.001 --epochs 5 --eval-every 5",
        "LP-FT: probe head, then lr 0.001, 5 epochs",
    ),
    Row(
        "candidate-transplant",
        BIRD,
        f"{CANDIDATE} --transplant-head --lr 0.001 --epochs 10 --eval-every 10",
        "transplanted head, lr 0.001",
    ),
    # The chosen recipe on all 5,994 training images (RULE.md); its flags are the rule's choice (`chosen_flags`).
    Row("bird-refit", BIRD, "{chosen}", "bird expert fine-tuned with the recipe chosen on validation, refit", True),
    Row("imagenet-v2", IMAGENET_V2, "", "ImageNet V2 1.0/224, the fine-tuning recipe (refit, look twice + flip)", True),
    # The phone budget before the V1 anchor: its rows are hours shorter and the int8 rows need only landed models.
    Row(
        "int8-imagenet-v2",
        "--checkpoint {runs}/imagenet-v2/last.pt --json {out}/int8-imagenet-v2.json --force",
        "",
        "int8 (PT2E, 256 calibration images) of imagenet-v2, one pass",
        module="quantize",
    ),
    Row(
        "int8-bird-refit",
        "--checkpoint {runs}/bird-refit/last.pt --json {out}/int8-bird-refit.json --force",
        "",
        "int8 (PT2E, 256 calibration images) of bird-refit, one pass",
        module="quantize",
    ),
    Row("student", STUDENT, PATIENT, "ImageNet V1 0.25/128 (13M MACs), 60 epochs, refit, one pass", True),
    Row(
        "student-distilled",
        STUDENT,
        f"{PATIENT} --mixup 1 --distill-weight 1 --teacher {{runs}}/bird-refit/last.pt",
        "the student distilled from bird-refit (function matching: soft targets only, mixup 1)",
        True,
    ),
    Row(
        "int8-student",
        "--checkpoint {runs}/student-distilled/last.pt --json {out}/int8-student.json --force",
        "",
        "int8 (PT2E, 256 calibration images) of the distilled student",
        module="quantize",
    ),
    Row("imagenet-v1", V1, "", "ImageNet V1 1.0/224, the fine-tuning recipe (refit, look twice + flip)", True),
    Row(
        "v1-vs-v2",
        "--data-root {data} --weights {weights} --runs {runs}/study --out {out} --name v1-vs-v2 --epochs 5",
        "",
        "the V1-versus-V2 study on equal footing (ImageNet starts, 5 epochs, best.pt on 10% validation)",
        module="bench.study",
    ),
)


def row_command(row: Row, data_root: Path, weights: Path, run: Path, out: Path = OUT) -> list[str]:
    """`train.py`'s arguments for `row` (`{chosen}`: the refit of the candidate the rule chose)."""
    args = ["--pretrained", str(weights / row.start), "--data-root", str(data_root), "--cache", "--out", str(run)]
    flags = row.flags
    if "{chosen}" in flags:
        chosen = chosen_flags(out)
        if chosen is None:
            raise InputError("bird-refit: the rule has not chosen yet (a candidate row is missing)")
        flags = flags.replace("{chosen}", chosen)
    return [*args, "--no-progress", *flags.format(runs=run.parent).split()]


CANDIDATES = ("candidate-fresh", "candidate-lpft", "candidate-lpft-short", "candidate-transplant")
NEAR = 0.005  # RULE.md: a candidate with fewer epochs within 5 of 1,000 validation images of the best wins


def choose(scores: dict[str, float], epochs: dict[str, int]) -> str:
    """RULE.md's choice among candidates by validation top-1 at their last epoch: the best, unless one with
    fewer epochs is within NEAR of it (then the one with the fewest epochs, the better of those on a tie)."""
    best = max(scores.values())
    near = [name for name in scores if scores[name] >= best - NEAR - 1e-9]
    return min(near, key=lambda name: (epochs[name], -scores[name]))


def chosen_flags(out: Path) -> str | None:
    """The refit's flags: the chosen candidate's, on every training image (`--val-fraction 0`, evaluated every 5
    epochs); None until every candidate has its result file."""
    results = {}
    for name in CANDIDATES:
        path = out / f"{name}.json"
        if not path.is_file():
            return None
        results[name] = json.loads(path.read_text())
    scores = {name: r["metrics"]["val_top1"] for name, r in results.items()}
    epochs = {name: r["metrics"]["epoch"] for name, r in results.items()}
    flags = next(row.flags for row in ROWS if row.name == choose(scores, epochs)).split()
    drop = {"--val-fraction", "--eval-every"}
    kept = [f for i, f in enumerate(flags) if f not in drop and (i == 0 or flags[i - 1] not in drop)]
    return " ".join(["--val-fraction", "0", *kept])


def split_predictions(checkpoint: Path, split: str) -> tuple["torch.Tensor", "torch.Tensor"]:
    """A checkpoint's logits and labels on its run's `split` ("val" or "test"), under its card's inference."""
    import torch

    from evaluate import predict
    from mobilenet import load_checkpoint
    from training.config import RunConfig

    model, card, info = load_checkpoint(checkpoint)
    dataset = RunConfig.of_checkpoint(info).dataset(split, card.transform(normalize=False))
    with torch.no_grad():
        return predict(
            card.inference.wrap(model.eval()), dataset, card.normalize(), torch.device("cpu"), batch_size=64, workers=2
        )


def run_row(row: Row, data_root: Path, weights: Path, run: Path, out: Path) -> None:
    """Train (or resume) `row` in this process and write its result file."""
    import train

    args = row_command(row, data_root, weights, run, out)
    resumed = (run / "last.pt").is_file()
    start = time.perf_counter()
    final = train.main([*args, "--resume"] if resumed else [*args, "--force"])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    result = dict(
        name=row.name,
        what=row.what,
        command="python train.py " + " ".join(args),
        metrics=final,
        epochs=rows,
        train_seconds=sum(r.get("seconds", 0) for r in rows),
        wall_seconds=None if resumed else time.perf_counter() - start,
        peak_rss_mb=_peak_rss_mb(),
        resumed=resumed,
    )
    if row.paired:  # the final model's right and wrong answers on the test split, in its order
        logits, labels = split_predictions(run / "last.pt", "test")
        right = (logits.argmax(1) == labels).tolist()
        result["test_right"] = "".join("1" if r else "0" for r in right)
    folders = {"CUB200": data_root, "WEIGHTS": weights, "RUN": run}
    text = without_paths(json.dumps(result, indent=1), folders)
    write_atomically(out / f"{row.name}.json", text)


PROBE_ROW = "probe-bird"  # what every fine-tuned row is tested against


def report(out: Path) -> str:
    """The finished training rows as a markdown table (test top-1 and top-5 of the final model, the start's
    mapped/unmapped split where a head was transplanted, validation where there was one, time and memory)."""
    header = ["row", "start, recipe, protocol", "test top-1", "top-5", "val top-1", "vs the probe", "training", "wall"]
    header.append("peak RSS")
    probe_file = out / f"{PROBE_ROW}.json"
    probe_right = json.loads(probe_file.read_text()).get("test_right") if probe_file.is_file() else None
    cells = []
    for row in ROWS:
        path = out / f"{row.name}.json"
        if row.module is not None or not path.is_file():
            continue
        result = json.loads(path.read_text())
        m = result["metrics"]
        top1 = f"{m['test_top1']:.2%}"
        if m.get("test_top1_mapped") is not None:
            top1 += f" (mapped {m['test_top1_mapped']:.2%}, unmapped {m['test_top1_unmapped']:.2%})"
        val = f"{m['val_top1']:.2%}" if m.get("val_top1") is not None else ""
        start = result["epochs"][0] if result["epochs"] and result["epochs"][0]["epoch"] == 0 else {}
        if val and start.get("val_top1") is not None:  # the probe's or the transplant's own, before training
            val += f" (start {start['val_top1']:.2%})"
        wall = f"{result['wall_seconds'] / 60:.1f} min" if result["wall_seconds"] else "resumed"
        versus = ""  # the exact McNemar test on the same test images (RULE.md: the refit against the probe)
        if probe_right and result.get("test_right") and row.name != PROBE_ROW:
            paired = paired_test([c == "1" for c in probe_right], [c == "1" for c in result["test_right"]])
            versus = f"+{paired['gained']} -{paired['lost']}, p = {paired['p']:.2g}"
        cells.append(
            [f"`{row.name}`", row.what, top1, f"{m['test_top5']:.2%}", val, versus]
            + [f"{result['train_seconds'] / 60:.1f} min", wall, f"{result['peak_rss_mb'] / 1024:.1f} GB"]
        )
    return markdown_table(header, "llrrrrrrr", cells)


def int8_report(out: Path) -> str:
    """The finished int8 rows as a markdown table: fp32 and int8 top-1 of one plain pass on the same test images,
    file size, and latency at batch 1 and 32 (fp32: the eager fast path; int8: compiled)."""
    header = ["row", "model", "fp32 top-1", "int8 top-1", "change", "size fp32 / int8", "batch 1 fp32 / int8"]
    header.append("batch 32 fp32 / int8")
    cells = []
    for row in ROWS:
        path = out / f"{row.name}.json"
        if row.module != "quantize" or not path.is_file():
            continue
        result = json.loads(path.read_text())
        fp32 = next(r for r in result["rows"] if r["model"].startswith("fp32 eager"))
        int8 = next(r for r in result["rows"] if r["model"].startswith("int8"))
        cells.append(
            [
                f"`{row.name}`",
                row.what,
                f"{fp32['top1']:.2%}",
                f"{int8['top1']:.2%}",
                f"{100 * (int8['top1'] - fp32['top1']):+.2f} points",
                f"{fp32['size_mb']:.1f} / {int8['size_mb']:.1f} MB",
                f"{fp32['latency_ms_batch1']:.1f} / {int8['latency_ms_batch1']:.1f} ms",
                f"{fp32['latency_ms_batch32']:.0f} / {int8['latency_ms_batch32']:.0f} ms",
            ]
        )
    return markdown_table(header, "llrrrrrr", cells)


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="The full CUB-200-2011 results, one row at a time.")
    p.add_argument("--data-root", required=True, help="the full CUB_200_2011 folder")
    p.add_argument("--weights", default=str(REPO.parent / "shared" / "weights"), help="Google's .tflite files")
    p.add_argument("--runs", default=str(REPO / "runs" / "cub200"), help="run folders (default: runs/cub200)")
    p.add_argument("--out", default=str(OUT), help="result files (default: bench/studies/cub200)")
    p.add_argument("--only", nargs="+", default=None, help="these rows only")
    p.add_argument("--report", action="store_true", help="print the finished rows as a markdown table and stop")
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)  # one row, in this process (the queue's child)
    args = p.parse_args(argv)
    data_root, weights, runs, out = (Path(a).resolve() for a in (args.data_root, args.weights, args.runs, args.out))
    names = [row.name for row in ROWS]
    unknown = [n for n in (args.only or []) + ([args.row] if args.row else []) if n not in names]
    if unknown:
        sys.exit(f"bench.cub200: error: no row {unknown[0]!r} (rows: {', '.join(names)})")
    if args.report:
        print(report(out))
        print()
        print(int8_report(out))
        return
    if args.row:
        row = ROWS[names.index(args.row)]
        if row.module is None:
            run_row(row, data_root, weights, runs / args.row, out)
            return
        module_args = row.start.format(runs=runs, out=out, data=data_root, weights=weights).split()
        subprocess.run([sys.executable, "-m", row.module, *module_args], cwd=REPO, check=True)
        result = out / f"{row.name}.json"
        folders = {"CUB200": data_root, "WEIGHTS": weights, "RUNS": runs}
        write_atomically(result, without_paths(result.read_text(), folders))
        return
    runs.mkdir(parents=True, exist_ok=True)
    for row in ROWS:
        if args.only and row.name not in args.only:
            continue
        if (out / f"{row.name}.json").is_file():
            print(f"{row.name}: done", flush=True)
            continue
        print(f"{row.name}: running (log: {runs / row.name}.log)", flush=True)
        command = [sys.executable, "-m", "bench.cub200", "--row", row.name]
        command += ["--data-root", str(data_root), "--weights", str(weights), "--runs", str(runs), "--out", str(out)]
        with open(runs / f"{row.name}.log", "a") as log:
            done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            sys.exit(f"bench.cub200: error: row {row.name} failed (exit {done.returncode}); see {runs / row.name}.log")
        print(f"{row.name}: done", flush=True)


if __name__ == "__main__":
    cli.run("bench.cub200", main)
