"""Records the allocator fix's effect (bench/allocator.py) in the benchmark JSON; asserts no speed ratio,
since the effect depends on the C library (it is reported in docs/results.md), only that the fix was applied
where glibc is."""

import platform
import sys

from bench.allocator import measure
from bench.conftest import V2_BATCH32


def test_allocator_effect(benchmark, record):
    default = measure("default")
    # The timed call is the tuned child process itself (one training-step measurement).
    tuned = benchmark.pedantic(measure, args=("tuned",), rounds=1, iterations=1)
    results = {"default": default, "tuned": tuned}
    record(
        **V2_BATCH32,
        layout="nchw",
        mode="allocator",
        default_step_s=results["default"]["step_s"],
        tuned_step_s=results["tuned"]["step_s"],
        default_peak_mb=results["default"]["peak_mb"],
        tuned_peak_mb=results["tuned"]["peak_mb"],
        speedup=results["default"]["step_s"] / results["tuned"]["step_s"],
    )
    print(
        f"\nallocator: default {results['default']['step_s']:.2f}s/step ({results['default']['peak_mb']:.0f} MB), "
        f"tuned {results['tuned']['step_s']:.2f}s/step ({results['tuned']['peak_mb']:.0f} MB)"
    )
    assert results["default"]["applied"] is False
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert results["tuned"]["applied"] is True, "mallopt was not applied on a glibc system"
