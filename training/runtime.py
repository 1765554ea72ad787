"""Process-level settings: the allocator fix, device choice, seeding, and torchrun's distributed set-up.

The allocator: for large buffers glibc's malloc uses mmap and gives the memory back to the system on free,
so every training step maps, faults in and unmaps its activation buffers again (its cost on CPU: docs/results.md,
training speed). `tune_malloc` turns both off through `mallopt` at start-up (no mmap, no trimming); it only
affects allocations made after the call.
"""

import ctypes
import ctypes.util
import os
import random
import sys
from collections.abc import Callable
from typing import cast

import numpy as np
import torch
import torch.distributed as dist

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes a C int: -1 disables trimming (mallopt(3)). The 64 GB of the environment variable does not fit
# and wrapped to 0, which trimmed the heap on every free: V2's batch-32 fast path took 105,000 page faults and
# about twice the time per call (tests/test_training_parts.py checks the faults).
TRIM_THRESHOLD = -1


def tune_malloc() -> bool:
    """Keep freed heap memory in the process (no mmap for large blocks, no trimming); True if applied."""
    if not sys.platform.startswith("linux"):
        return False
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let at most `arenas` glibc heaps serve all threads (a service's thread pool would otherwise get one per
    thread, each keeping its own freed memory); call before the threads start. True if applied."""
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc_name is None:
        return False
    try:
        return bool(ctypes.CDLL(libc_name).mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def release_memory() -> None:
    """Return the heap's free pages to the system (glibc `malloc_trim`; a no-op elsewhere): after a large
    decode, so that a service's resident memory falls back instead of staying at its peak."""
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc_name is not None:
        try:
            ctypes.CDLL(libc_name).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def select_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicit device that is not there is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("--device mps: MPS is not available on this machine")
    if name == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict:
    name, keys, pos, has_gauss, gauss = cast(tuple, np.random.get_state(legacy=True))
    # Plain tensors and numbers only, so checkpoints load with torch.load(weights_only=True).
    numpy_state = {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": pos,
        "has_gauss": has_gauss,
        "gauss": gauss,
    }
    states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def rank_zero_logger() -> Callable[[str], None]:
    """`print` (flushed) on rank 0 of a torchrun job or in a single process; silent on the other ranks."""
    rank = int(os.environ.get("RANK", 0))

    def log(message: str) -> None:
        if rank == 0:
            print(message, flush=True)

    return log


def init_distributed(device: torch.device) -> tuple[int, int]:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on CUDA); (rank, world)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum numbers over ranks (a no-op outside distributed runs)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


@torch.no_grad()
def average_buffers(model: torch.nn.Module) -> None:
    """Average floating-point buffers (batch-norm running statistics) over ranks, so that every rank
    evaluates and checkpoints the same model: DDP syncs gradients, but each rank updates its running
    statistics from its own last batches."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for buffer in model.buffers():
        if buffer.dtype.is_floating_point:
            dist.all_reduce(buffer)
            buffer.div_(world)


def wrap_distributed(model: torch.nn.Module, device: torch.device, world: int) -> torch.nn.Module:
    """DistributedDataParallel around `model` in a torchrun job of more than one process, else `model`."""
    if world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def barrier() -> None:
    """Wait for every rank (a no-op outside distributed runs)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def close_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
