"""One way to time a forward pass: the median of timed rounds after warm-up rounds.

The median rather than the mean, so that a stray scheduling hiccup on a shared machine does not move the
figure; `fn` is called `warmup` times first (caches, oneDNN primitive creation, compilation).
"""

import time
from collections.abc import Callable

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
