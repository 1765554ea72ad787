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

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _median_ms(bench: dict) -> float:
    return bench["stats"]["median"] * 1000


def layer_table(benchmarks: list[dict]) -> tuple[list[str], list[dict]]:
    layers = [b for b in benchmarks if b["extra_info"].get("kind")]
    by_key = {}
    for b in layers:
        e = b["extra_info"]
        by_key[(e["table"], e["m"], e["n"], e["size"], e["stride"], e["kind"], e["layout"])] = b
    pairs = []
    lines = [
        "| table | M -> N | D_F | stride | standard MACs | separable MACs | MAC ratio | standard ms | separable ms | latency ratio | depthwise ms (NCHW / NHWC) | pointwise ms (NCHW / NHWC) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    shapes = sorted({k[:5] for k in by_key}, key=lambda k: (k[0], -k[3], k[1]))
    for shape in shapes:
        std, sep = by_key.get((*shape, "standard", "nchw")), by_key.get((*shape, "separable", "nchw"))
        if not (std and sep):
            continue
        dw = [by_key.get((*shape, "depthwise", lay)) for lay in ("nchw", "channels_last")]
        pw = [by_key.get((*shape, "pointwise", lay)) for lay in ("nchw", "channels_last")]
        mac_ratio = std["extra_info"]["macs"] / sep["extra_info"]["macs"]
        latency_ratio = _median_ms(std) / _median_ms(sep)
        fmt = lambda pair: " / ".join(f"{_median_ms(b):.3f}" if b else "-" for b in pair)  # noqa: E731
        lines.append(
            f"| {shape[0]} | {shape[1]} -> {shape[2]} | {shape[3]} | {shape[4]} | {std['extra_info']['macs'] / 1e6:.1f}M | "
            f"{sep['extra_info']['macs'] / 1e6:.2f}M | {mac_ratio:.1f}x | {_median_ms(std):.3f} | {_median_ms(sep):.3f} | "
            f"{latency_ratio:.1f}x | {fmt(dw)} | {fmt(pw)} |"
        )
        pairs.append(
            {
                "label": f"{shape[1]}->{shape[2]}@{shape[3]}",
                "mac_ratio": mac_ratio,
                "latency_ratio": latency_ratio,
                "dw_ms": _median_ms(dw[0]) if dw[0] else None,
                "pw_ms": _median_ms(pw[0]) if pw[0] else None,
            }
        )
    return lines, pairs


def model_table(benchmarks: list[dict]) -> tuple[list[str], list[dict]]:
    models = [b for b in benchmarks if b["extra_info"].get("mode") in ("inference", "train step")]
    lines = [
        "| model | resolution | mode | batch | params | MACs / image | median ms | images/s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    points = []
    for b in sorted(
        models,
        key=lambda b: (
            b["extra_info"]["mode"],
            b["extra_info"]["arch"],
            b["extra_info"]["width"],
            b["extra_info"]["resolution"],
            b["extra_info"]["batch"],
        ),
    ):
        e = b["extra_info"]
        ms = _median_ms(b)
        lines.append(
            f"| {e['arch']} {e['width']:g} | {e['resolution']} | {e['mode']} | {e['batch']} | {e['params']:,} | "
            f"{e['macs'] / 1e6:.1f}M | {ms:.1f} | {e['batch'] / ms * 1000:.1f} |"
        )
        points.append({**e, "ms": ms})
    return lines, points


def other_lines(benchmarks: list[dict]) -> list[str]:
    lines = []
    for b in benchmarks:
        e = b["extra_info"]
        mode = e.get("mode")
        if mode == "fast path":
            lines.append(
                f"- Fast path (V2 1.0, 224, batch 32): eager {e['eager_s']:.3f} s, eager + channels_last "
                f"{e['eager_channels_last_s']:.3f} s, BN-folded + channels_last {e['fast_s']:.3f} s = **{e['speedup']:.2f}x** "
                f"eager (max abs diff {e['max_abs_diff']:.1e}); {e['fast_macs_per_s'] / 1e9:.1f} GMAC/s = "
                f"**{e['fraction_of_matmul']:.0%}** of the fp32 matmul rate measured in the same run ({e['matmul_macs_per_s'] / 1e9:.1f} GMAC/s)."
            )
        elif mode == "compiled":
            lines.append(
                f"- torch.compile (freezing) on top: {e['compiled_s']:.3f} s per batch = **{e['speedup']:.2f}x** eager, "
                f"compile time {e['compile_s']:.0f} s, max abs diff {e['max_abs_diff']:.1e}."
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
    args = parser.parse_args(argv)
    data = json.loads(Path(args.json).read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    benchmarks = data["benchmarks"]
    machine = next((b["extra_info"] for b in benchmarks if "machine" in b["extra_info"]), {})
    layer_lines, pairs = layer_table(benchmarks)
    model_lines, points = model_table(benchmarks)
    report = [
        "# Benchmark report",
        "",
        f"Machine: {machine.get('machine', '?')}; torch {machine.get('torch', '?')}, {machine.get('threads', '?')} threads, float32. "
        f"From `{Path(args.json).name}` ({data.get('datetime', '')}). Latencies are pytest-benchmark medians.",
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
    main()
