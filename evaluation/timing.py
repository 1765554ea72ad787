"""Timing: the median of timed rounds after warm-up (`median_seconds`), and contenders timed against each
other in alternating rounds (`interleaved`), which is how every comparison in `bench/` is measured, and
where a forward pass spends its time by layer kind (`ms_by_layer_kind`, from torch.profiler).

The median rather than the mean, so that a stray scheduling hiccup on a shared machine does not move the
figure; `fn` is called `warmup` times first (caches, oneDNN primitive creation, compilation).
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def median_seconds(fn: Callable[[], object], rounds: int, *, warmup: int = 2, cuda: bool = False) -> float:
    """Median wall-clock seconds of `fn()` over `rounds` calls, after `warmup` untimed calls.

    With `cuda`, the device is synchronised around each call so that queued kernels are counted. Gradient
    mode is the caller's: wrap the call in `torch.no_grad()` / `torch.inference_mode()` to time inference.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@dataclass
class Timing:
    """Seconds per call of one contender: the median and the spread (max - min) / median of its rounds."""

    median: float
    spread: float
    rounds: list[float]


def interleaved(contenders: dict[str, Callable[[], object]], rounds: int = 5, *, warmup: int = 1) -> dict[str, Timing]:
    """Time several callables against each other in one process: every contender warms up first, then the
    rounds alternate (A B C A B C ...), so a busy neighbour or a frequency change hits them all alike and
    their ratio holds even when the absolute times do not."""
    if rounds < 5:
        raise ValueError(f"interleaved timing needs at least 5 rounds, got {rounds}")
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    result = {}
    for name, values in times.items():
        median = sorted(values)[len(values) // 2]
        result[name] = Timing(median, (max(values) - min(values)) / median, values)
    return result


def kind_of_weight(shape: list[int]) -> str:
    """The layer kind of a convolution from its weight's shape (out, in / groups, k, k)."""
    out_channels, per_group, k = shape[0], shape[1], shape[-1]
    if per_group == 1 and out_channels > 1 and k > 1:
        return "depthwise"
    return "pointwise 1x1" if k == 1 else "full conv"


def ms_by_layer_kind(model: torch.nn.Module, x: torch.Tensor, calls: int = 3) -> dict[str, float]:
    """Milliseconds per call of `model(x)` spent in each layer kind (torch.profiler, self time of the leaf ops;
    no hooks, which would add their own time): the ReLU6 after a convolution (a separate `clamp`) is counted
    with it, as onnxruntime fuses it; additions, pooling and the classifier are "other"."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(calls):
            model(x)
    totals: dict[str, float] = {}
    last = "other"
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        if event.name == "aten::mkldnn_convolution" or event.name == "aten::_slow_conv2d_forward":
            last = kind_of_weight(event.input_shapes[1])
            kind = last
        elif event.name == "aten::clamp":
            kind = last
        elif event.name in ("aten::add", "aten::mean", "aten::addmm", "aten::linear", "aten::sum"):
            kind = "other"
        else:
            continue
        totals[kind] = totals.get(kind, 0.0) + event.self_cpu_time_total / 1000 / calls
    return totals
