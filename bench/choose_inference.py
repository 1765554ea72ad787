"""Choose the test-time inference on validation only: `python -m bench.choose_inference RUN [RUN ...]`.

cub20's validation split holds 60 images, so one checkpoint cannot tell test-time variants apart (one image
is 1.7 points). This pools the evidence: every variant is evaluated on the validation split of `best.pt` and
`last.pt` of every run given, and the table adds up correct images and negative log-likelihood over all of
them. The test split is never read. Writes `bench/studies/choose_inference_cub20.{json,md}`.
"""

import argparse
import json
import tempfile
from pathlib import Path

import evaluate
from mobilenet import load_checkpoint
from mobilenet.checkpoint import write_atomically

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "studies"
# name, evaluate.py flags given the checkpoint's training resolution R
VARIANTS = [
    ("one pass at R", lambda r: ["--resolution", str(r), "--no-hflip", "--no-look-twice"]),
    ("one pass at 8R/7 (FixRes)", lambda r: ["--resolution", str(round(r * 8 / 7)), "--no-hflip", "--no-look-twice"]),
    ("flip averaging", lambda r: ["--resolution", str(r), "--hflip", "--no-look-twice"]),
    ("look twice", lambda r: ["--resolution", str(r), "--no-hflip", "--look-twice"]),
    ("look twice + flip", lambda r: ["--resolution", str(r), "--hflip", "--look-twice"]),
]


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description="Pool validation evidence for the test-time inference.")
    p.add_argument("runs", nargs="+", help="run folders holding best.pt and last.pt")
    p.add_argument("--out", default=str(OUT), help=f"result folder (default: {OUT.relative_to(REPO)})")
    args = p.parse_args(argv)
    checkpoints = [Path(run) / name for run in args.runs for name in ("best.pt", "last.pt")]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, flags in VARIANTS:
            correct = images = 0
            nll = 0.0
            per_checkpoint = {}
            for k, checkpoint in enumerate(checkpoints):
                resolution = load_checkpoint(checkpoint)[1]["data_config"]["resolution"]
                common = ["--checkpoint", str(checkpoint), "--split", "val", "--no-plots", "--latency-rounds", "1"]
                m = evaluate.main([*common, "--out", f"{scratch}/{name}-{k}", *flags(resolution)])
                correct += round(m["top1"] * m["count"])
                images += m["count"]
                nll += m["nll"] * m["count"]
                per_checkpoint[f"{checkpoint.parent.name}/{checkpoint.name}"] = m["top1"]
            rows.append(dict(variant=name, correct=correct, images=images, top1=correct / images, nll=nll / images))
            rows[-1]["per_checkpoint"] = per_checkpoint
    lines = [
        "# Test-time inference chosen on validation (`python -m bench.choose_inference`)",
        "",
        f"Validation split of {', '.join(f'`{c.parent.name}/{c.name}`' for c in checkpoints)}, pooled.",
        "",
        "| variant | correct / images | val top-1 | val NLL |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['variant']} | {r['correct']} / {r['images']} | {r['top1']:.2%} | {r['nll']:.4f} |" for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "choose_inference_cub20.json", lambda f: f.write(json.dumps(rows, indent=2).encode()))
    write_atomically(out / "choose_inference_cub20.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
