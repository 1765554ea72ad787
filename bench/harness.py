"""What the studies of `bench/` share: their command line, a `train.py` run, tables and the committed files.

A study (`bench.study`, `bench.finegrained`, `bench.crossval`) trains runs with `train.py` in run folders
(resumed when an earlier attempt stopped), measures them, and writes `bench/studies/NAME.{json,md}` with no
machine paths in them.
"""

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from atomicfile import write_atomically
from cli import InputError
from data.shared import shared_path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "studies"


def study_parser(description: str, runs: str) -> argparse.ArgumentParser:
    """A study's parser with the options every study has: `--data-root`, `--weights`, `--runs`, `--out`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-root", default=None, help="cub20 root (default: ../shared/data/cub20/CUB_200_2011)")
    p.add_argument("--weights", default=None, help="folder of Google's .tflite files (default: ../shared/weights)")
    p.add_argument("--runs", default=str(REPO / "runs" / runs), help=f"run folders (default: runs/{runs})")
    p.add_argument("--out", default=str(OUT), help=f"result folder (default: {OUT.relative_to(REPO)})")
    return p


def study_inputs(args: argparse.Namespace, study: str) -> tuple[Path, Path]:
    """`(cub20 root, weights folder)` from the flags or `../shared`; one line and exit 1 when missing."""
    data_root = Path(args.data_root) if args.data_root else shared_path("data", "cub20", "CUB_200_2011")
    weights = Path(args.weights) if args.weights else shared_path("weights")
    if data_root is None or weights is None:
        sys.exit(f"{study}: error: cub20 or Google's weights not found: give --data-root and --weights")
    return data_root, weights


def train_run(run: Path, data_root: Path, flags: Sequence[str]) -> dict:
    """`python train.py --data-root ROOT --cache --out RUN ... FLAGS` (resumed if an earlier attempt left a
    `last.pt`); returns its command and timing."""
    args = [sys.executable, str(REPO / "train.py"), "--data-root", str(data_root)]
    args += ["--cache", "--out", str(run), "--no-progress", "--force", *flags]
    resumed = (run / "last.pt").is_file()
    if resumed:
        args.append("--resume")
    start = time.perf_counter()
    if subprocess.run(args, cwd=REPO).returncode != 0:  # train.py has printed its one line
        raise InputError(f"train.py stopped on run {run} (its message is above); rerun to resume it")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {
        "command": " ".join(["python", "train.py", *args[2:]]).replace(" --resume", ""),
        "wall_seconds": None if resumed else time.perf_counter() - start,
        "train_seconds": sum(r.get("seconds", 0) for r in rows),  # the start's row (epoch 0) trains nothing
        "epochs": max(r["epoch"] for r in rows),
    }


def without_paths(text: str, folders: dict[str, Path]) -> str:
    """`text` with each folder (as given and resolved) replaced by its label, e.g. {"CUB20": root}."""
    for label, folder in folders.items():
        text = text.replace(str(folder.resolve()), label).replace(str(folder), label)
    return text


def markdown_table(header: Sequence[str], align: str, rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; `align` has one letter per column: `l` left, `r` right."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_study(out: Path, name: str, result: object, text: str) -> None:
    """`out/NAME.json` and `out/NAME.md`, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / f"{name}.json", json.dumps(result, indent=2))
    write_atomically(out / f"{name}.md", text)
