"""Turn a pytest-benchmark JSON into Markdown tables and plots under bench/results/.

    pytest bench                                  # writes bench/output/latest.json (git-ignored)
    python -m bench.report bench/output/latest.json  # the committed bench/results/report.md and plots

Writes `bench/results/report.md` (machine, layer table with MAC and latency ratios, model table, fast path,
data loading, training throughput, allocator), `latency_vs_macs.png` and `layer_ratios.png`.
"""

import argparse
import json
from pathlib import Path

import matplotlib

import cli
from cli import UsageError

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _median_ms(bench: dict) -> float:
    return bench["stats"]["median"] * 1000


def layer_table(benchmarks: list[dict]) -> tuple[list[str], list[dict]]:
    layers = sorted(
        (b["extra_info"] for b in benchmarks if b["extra_info"].get("kind") == "layers"),
        key=lambda e: (e["table"], -e["size"], e["m"]),
    )
    pairs = []
    lines = [
        "| table | M -> N | D_F | stride | standard MACs | separable MACs | MAC ratio | standard ms | separable ms | "
        "latency ratio | depthwise ms | pointwise ms | largest spread |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in layers:
        ms, macs = e["ms"], e["macs"]
        mac_ratio = macs["standard"] / macs["separable"]
        latency_ratio = ms["standard_nchw"] / ms["separable_nchw"]
        lines.append(
            f"| {e['table']} | {e['m']} -> {e['n']} | {e['size']} | {e['stride']} | {macs['standard'] / 1e6:.1f}M | "
            f"{macs['separable'] / 1e6:.2f}M | {mac_ratio:.1f}x | {ms['standard_nchw']:.3f} | {ms['separable_nchw']:.3f} | "
            f"{latency_ratio:.1f}x | {ms['depthwise_nchw']:.3f} | {ms['pointwise_nchw']:.3f} | {max(e['spread'].values()):.0%} |"
        )
        pairs.append(
            {
                "label": f"{e['m']}->{e['n']}@{e['size']}",
                "mac_ratio": mac_ratio,
                "latency_ratio": latency_ratio,
                "spread": max(e["spread"].values()),
            }
        )
    return lines, pairs


def model_table(benchmarks: list[dict]) -> tuple[list[str], list[dict]]:
    """Inference rows (every width of an architecture timed interleaved) and training-step rows."""
    lines = [
        "| model | resolution | mode | batch | params | MACs / image | median ms | spread | images/s |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    points = []
    for b in benchmarks:
        e = b["extra_info"]
        if e.get("mode") == "inference" and "widths" in e:
            for w in e["widths"]:
                points.append({**e, **w, "ms": w["median_s"] * 1000})
        elif e.get("mode") == "train step":
            points.append({**e, "ms": _median_ms(b), "spread": None})
    for p in sorted(points, key=lambda p: (p["mode"], p["arch"], p["width"], p["resolution"], p["batch"])):
        spread = "-" if p["spread"] is None else f"{p['spread']:.0%}"
        lines.append(
            f"| {p['arch']} {p['width']:g} | {p['resolution']} | {p['mode']} | {p['batch']} | {p['params']:,} | "
            f"{p['macs'] / 1e6:.1f}M | {p['ms']:.1f} | {spread} | {p['batch'] / p['ms'] * 1000:.1f} |"
        )
    return lines, points


def anomalies(points: list[dict], layer_pairs: list[dict], verdicts: list[dict]) -> list[str]:
    """What a reader should not trust without a second run: latency falling as the width grows at a fixed
    architecture, resolution and batch, and any measurement whose spread is over 25% of its median."""
    found = []
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        if p["mode"] == "inference":
            groups.setdefault((p["arch"], p["resolution"], p["batch"]), []).append(p)
    for (arch, resolution, batch), group in sorted(groups.items()):
        group.sort(key=lambda p: p["width"])
        for small, large in zip(group, group[1:]):
            if large["ms"] < small["ms"]:
                found.append(
                    f"- not monotonic in width: {arch} {large['width']:g} ({large['ms']:.1f} ms) is faster than "
                    f"{arch} {small['width']:g} ({small['ms']:.1f} ms) at {resolution} px, batch {batch}"
                )
    for p in points:
        if p.get("spread") is not None and p["spread"] > 0.25:
            found.append(
                f"- spread {p['spread']:.0%} (> 25%): {p['arch']} {p['width']:g} at {p['resolution']} px, batch {p['batch']}"
            )
    for pair in layer_pairs:
        if pair["spread"] > 0.25:
            found.append(f"- spread {pair['spread']:.0%} (> 25%) in the layer comparison {pair['label']}")
    for v in verdicts:
        if v.get("spread") is not None and v["spread"] > 0.25:
            found.append(f"- spread {v['spread']:.0%} (> 25%) in: {v['name']}")
    return found or ["- none"]


def verdict_lines(verdicts: list[dict]) -> list[str]:
    lines = ["| target | wanted | measured | verdict |", "|---|---:|---:|---|"]
    for v in verdicts:
        lines.append(f"| {v['name']} | >= {v['target']:g} | {v['measured']:.2f} | {'met' if v['met'] else 'missed'} |")
    return lines


def other_lines(benchmarks: list[dict]) -> list[str]:
    lines = []
    for b in benchmarks:
        e = b["extra_info"]
        mode = e.get("mode")
        if mode == "fast path":
            lines.append(
                f"- Fast path (V2 1.0, 224, batch 32; eager, eager channels_last, fast path and compiled timed "
                f"interleaved): eager {e['eager_s']:.3f} s, eager + channels_last {e['eager_channels_last_s']:.3f} s, "
                f"BN-folded + channels_last {e['fast_s']:.3f} s = **{e['speedup']:.2f}x** eager, compiled "
                f"{e['compiled_s']:.3f} s = **{e['compiled_speedup']:.2f}x** eager (compile time {e['compile_s']:.0f} s); "
                f"max abs diff {e['max_abs_diff']:.1e}; {e['fast_macs_per_s'] / 1e9:.1f} GMAC/s = "
                f"**{e['fraction_of_matmul']:.0%}** of the fp32 matmul rate measured in the same run "
                f"({e['matmul_macs_per_s'] / 1e9:.1f} GMAC/s)."
            )
        elif mode == "fast path against onnxruntime":
            kinds = sorted(set(e["ours_ms_by_kind"]) | set(e["onnxruntime_ms_by_kind"]))
            by_kind = "; ".join(
                f"{k} {e['ours_ms_by_kind'].get(k, 0):.1f} against {e['onnxruntime_ms_by_kind'].get(k, 0):.1f} ms"
                for k in kinds
            )
            lines.append(
                f"- Against onnxruntime (V2 1.0 with Google's padding, 224, batch {e['batch']}, same threads, "
                f"interleaved): ours {e['ours_s'] * 1000:.1f} ms, onnxruntime {e['onnxruntime_s'] * 1000:.1f} ms = "
                f"**{e['ours_over_onnxruntime']:.2f}x** its images/s; of the fp32 matmul rate: ours "
                f"{e['ours_fraction_of_matmul']:.0%}, onnxruntime {e['onnxruntime_fraction_of_matmul']:.0%}. "
                f"By layer kind (each runtime's profiler, ReLU6 counted with its convolution; ours, onnxruntime): {by_kind}."
            )
        elif mode == "data loading":
            lines.append(
                f"- Data loading (normalized 224 training tensors, one process): JPEG {e['jpeg_images_per_s']:.0f} images/s, "
                f"packed cache {e['cache_images_per_s']:.0f} images/s = **{e['speedup']:.1f}x**."
            )
        elif mode == "train throughput":
            lines.append(
                f"- Training throughput, V2 1.0 at 224, batch 32: ours {e['ours_images_per_s']:.1f} images/s, torchvision-style "
                f"reference {e['reference_images_per_s']:.1f} images/s = **{e['ratio']:.3f}x**."
            )
        elif mode == "allocator":
            lines.append(
                f"- Allocator (V2 1.0 training step, batch 32, 224): glibc default {e['default_step_s']:.2f} s "
                f"(peak {e['default_peak_mb']:.0f} MB), tuned {e['tuned_step_s']:.2f} s (peak {e['tuned_peak_mb']:.0f} MB) "
                f"= **{e['speedup']:.2f}x**."
            )
    return lines


def plot_latency_vs_macs(points: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 6))
    for (arch, batch), marker in ((("v1", 1), "o"), (("v2", 1), "s"), (("v1", 32), "^"), (("v2", 32), "D")):
        sub = [p for p in points if p["arch"] == arch and p["batch"] == batch and p["mode"] == "inference"]
        if sub:
            ax.scatter(
                [p["macs"] / 1e6 for p in sub],
                [p["ms"] / batch for p in sub],
                marker=marker,
                label=f"{arch.upper()} batch {batch}",
            )
    ax.set_xlabel("multiply-adds per image (millions)")
    ax.set_ylabel("ms per image")
    ax.set_title("latency versus MACs")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_layer_ratios(pairs: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 6))
    ax.scatter([p["mac_ratio"] for p in pairs], [p["latency_ratio"] for p in pairs])
    for p in pairs:
        ax.annotate(
            p["label"], (p["mac_ratio"], p["latency_ratio"]), fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
    top = max([p["mac_ratio"] for p in pairs] + [1])
    ax.plot([0, top], [0, top], "k--", linewidth=1, label="latency gain = MAC gain")
    ax.axhline(1, color="gray", linewidth=0.8)
    ax.set_xlabel("MAC ratio (standard / separable)")
    ax.set_ylabel("latency ratio (standard / separable)")
    ax.set_title("what the MAC saving buys in latency, per layer")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Markdown tables and plots from a pytest-benchmark JSON.")
    parser.add_argument("json", help="file written by pytest bench --benchmark-json=...")
    parser.add_argument("--out", default=str(RESULTS), help=f"output folder (default: {RESULTS})")
    parser.add_argument("--note", default="", help="a sentence on the conditions of the run, shown under the title")
    args = parser.parse_args(argv)
    source = Path(args.json)
    if not source.is_file():
        raise UsageError(f"{source}: no such file (run `pytest bench` first: it writes bench/output/latest.json)")
    try:
        data = json.loads(source.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            raise ValueError("no 'benchmarks' list")
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{source}: not a pytest-benchmark JSON file ({e})") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    benchmarks = data["benchmarks"]
    machine = next((b["extra_info"] for b in benchmarks if "machine" in b["extra_info"]), {})
    layer_lines, pairs = layer_table(benchmarks)
    model_lines, points = model_table(benchmarks)
    verdicts = [v for b in benchmarks for v in b["extra_info"].get("verdicts", [])]
    report = [
        "# Benchmark report",
        "",
        *([args.note, ""] if args.note else []),
        f"Machine: {machine.get('machine', '?')}; torch {machine.get('torch', '?')}, {machine.get('threads', '?')} threads, float32. "
        f"From `{Path(args.json).name}` ({data.get('datetime', '')}). Every comparison is timed interleaved in one process (warm-up first, alternating rounds): medians and spread "
        "(max - min) / median.",
        "",
        "## Targets (verdicts, not assertions)",
        "",
        *verdict_lines(verdicts),
        "",
        "## Anomalies",
        "",
        *anomalies(points, pairs, verdicts),
        "",
        "## Standard 3x3 convolution versus depthwise-separable (batch 1)",
        "",
        *layer_lines,
        "",
        "## Models",
        "",
        *model_lines,
        "",
        "## Fast path, data, training, allocator",
        "",
        *other_lines(benchmarks),
        "",
        "![latency versus MACs](latency_vs_macs.png)",
        "![layer ratios](layer_ratios.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(report), encoding="utf-8")
    if points:
        plot_latency_vs_macs(points, out / "latency_vs_macs.png")
    if pairs:
        plot_layer_ratios(pairs, out / "layer_ratios.png")
    print(f"wrote {out / 'report.md'}")
    return out / "report.md"


if __name__ == "__main__":
    cli.run("bench.report", main)
