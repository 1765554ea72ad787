"""Timing: the median of timed rounds after warm-up (`median_seconds`), and contenders timed against each
other in alternating rounds (`interleaved`), which is how every comparison in `bench/` is measured.

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
