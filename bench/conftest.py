"""Settings for `pytest bench`: the default grid runs in minutes on 2 cores; FGM_BENCH_FULL=1 runs all of it.

Every benchmark records the machine, torch version, threads, dtype, layout and batch in `extra_info`, so that
`python -m bench.report` can lay the JSON out as a table without guessing.
"""

import os
import platform

import pytest
import torch

FULL = os.environ.get("FGM_BENCH_FULL", "") not in ("", "0")


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "machine": f"{cpu} ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


@pytest.fixture(scope="session", autouse=True)
def _allocator():
    from training.runtime import tune_malloc

    tune_malloc()  # as train.py and evaluate.py do: measured effect in docs/results.md


@pytest.fixture
def record(benchmark):
    """Set extra_info with the machine facts plus the given fields."""

    def _record(**fields):
        benchmark.extra_info.update(machine_info())
        benchmark.extra_info.update(fields)

    return _record


# The setting of the whole-model comparisons (fast path, training throughput, allocator): V2 1.0, 224 px, batch 32.
V2_BATCH32 = dict(arch="v2", width=1.0, resolution=224, batch=32, dtype="float32")


def verdict(name: str, target: float, measured: float, spread: float | None = None) -> dict:
    """A timing target as a verdict for the report (target, measured, met or missed), not an assertion: on a
    busy laptop a target can be missed without anything being wrong. Higher is better."""
    return {"name": name, "target": target, "measured": measured, "spread": spread, "met": measured >= target}


def rounds(default: int, full: int) -> int:
    return full if FULL else default
