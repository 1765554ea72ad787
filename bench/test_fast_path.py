"""The inference fast path against the eval-mode model, measured in the same run.

`optimize_for_inference` (BN folded, channels_last) must be at least 1.5x faster than the eager eval-mode
model at batch 32 on CPU (a ratio within one run, not a wall-clock target). The compiled variant and its
compile time are recorded, and so is the fraction of the fp32 matmul rate of the CPU the benchmark runs on
(measured in the same run, recorded with the machine's name in the report) that the fast path reaches (V2 1.0 at 224: 0.30 G multiply-adds per image).
"""

import time

import pytest
import torch

from evaluation.timing import median_seconds
from mobilenet import create_model, optimize_for_inference
from mobilenet.flops import count_macs


def matmul_macs_per_second(n: int = 2048, rounds: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return n**3 / median_seconds(lambda: a @ b, rounds)


@pytest.fixture(scope="module")
def v2_model():
    torch.manual_seed(0)
    model = create_model("v2", num_classes=1000).eval()
    for m in model.modules():  # non-trivial statistics, so that folding has something to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model


def test_fast_path_speed_and_equality(benchmark, record, v2_model):
    x = torch.randn(32, 3, 224, 224)
    fast = optimize_for_inference(v2_model)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = v2_model(x)
        diff = (fast(x_cl) - reference).abs().max().item()
        eager = median_seconds(lambda: v2_model(x), rounds=5)
        folded = median_seconds(lambda: fast(x_cl), rounds=5)
        eager_cl = median_seconds(lambda: v2_model.to(memory_format=torch.channels_last)(x_cl), rounds=5)
        v2_model.to(memory_format=torch.contiguous_format)
    macs, _ = count_macs(v2_model, 224)
    rate = matmul_macs_per_second()
    achieved = macs * 32 / folded
    record(
        arch="v2",
        width=1.0,
        resolution=224,
        batch=32,
        dtype="float32",
        layout="channels_last",
        mode="fast path",
        eager_s=eager,
        eager_channels_last_s=eager_cl,
        fast_s=folded,
        speedup=eager / folded,
        max_abs_diff=diff,
        macs=macs,
        matmul_macs_per_s=rate,
        fast_macs_per_s=achieved,
        fraction_of_matmul=achieved / rate,
    )
    print(
        f"\neager {eager:.3f}s, eager channels_last {eager_cl:.3f}s, fast path {folded:.3f}s: {eager / folded:.2f}x; "
        f"{achieved / 1e9:.1f} GMAC/s = {achieved / rate:.0%} of the {rate / 1e9:.1f} GMAC/s fp32 matmul rate"
    )
    assert diff <= 1e-4
    assert eager / folded >= 1.5
    with torch.no_grad():
        benchmark.pedantic(fast, args=(x_cl,), rounds=3, iterations=1, warmup_rounds=1)


def test_compiled_fast_path(benchmark, record, v2_model):
    x = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        reference = v2_model(x)
        start = time.perf_counter()
        compiled = optimize_for_inference(v2_model, compile=True)
        out = compiled(x)
        compile_s = time.perf_counter() - start
        diff = (out - reference).abs().max().item()
        eager = median_seconds(lambda: v2_model(x.contiguous()), rounds=5)
        compiled_s = median_seconds(lambda: compiled(x), rounds=5)
    record(
        arch="v2",
        width=1.0,
        resolution=224,
        batch=32,
        dtype="float32",
        layout="channels_last",
        mode="compiled",
        compile_s=compile_s,
        eager_s=eager,
        compiled_s=compiled_s,
        speedup=eager / compiled_s,
        max_abs_diff=diff,
    )
    print(
        f"\ncompiled: {compiled_s:.3f}s ({eager / compiled_s:.2f}x eager), compile time {compile_s:.1f}s, max diff {diff:.2e}"
    )
    assert diff <= 1e-3
    with torch.no_grad():
        benchmark.pedantic(compiled, args=(x,), rounds=3, iterations=1, warmup_rounds=1)
