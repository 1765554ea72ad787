"""What "is there a bird?" costs a photo (issue #36: at most 1.3x its latency on 2 CPU cores).

A probe of the iNaturalist-birds file (the README's full-set model) keeps the file's 965-way head as its gate
(`mobilenet.gate.Gated`): one more linear layer on the pooled features it already computed. Timed at batch 1
against the same model without it, interleaved, on the serving fast path (`optimize_for_inference`).
"""

import torch

from evaluation.timing import interleaved
from mobilenet import create_model, optimize_for_inference
from mobilenet.gate import Gated

GATE_LATENCY_LIMIT = 1.3


def test_the_gate_adds_at_most_a_third_to_a_photo_s_latency(benchmark, record):
    torch.manual_seed(0)
    model = optimize_for_inference(create_model("v2", width_mult=1.0, num_classes=200).eval())
    gated = Gated(model, torch.randn(965, 1280) * 0.01, torch.zeros(965), no_bird=964).eval()
    x = torch.randn(1, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        torch.testing.assert_close(gated(x)[:, :200], model(x))  # the same species logits, one more column
        t = interleaved({"plain": lambda: model(x), "gated": lambda: gated(x)}, rounds=15, warmup=3)
    ratio = t["gated"].median / t["plain"].median
    record(
        arch="v2",
        width=1.0,
        resolution=224,
        batch=1,
        mode="gate",
        dtype="float32",
        layout="channels_last",
        plain_ms=1000 * t["plain"].median,
        gated_ms=1000 * t["gated"].median,
        ratio=ratio,
        plain_spread=t["plain"].spread,
        gated_spread=t["gated"].spread,
    )
    benchmark.pedantic(lambda: gated(x), rounds=1, iterations=1)
    assert ratio <= GATE_LATENCY_LIMIT, f"the gate costs {ratio:.2f}x a photo's latency"
