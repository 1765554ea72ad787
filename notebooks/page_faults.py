"""Notebook 01, exercise 4: `python -m notebooks.page_faults BATCH` in a fresh process.

Times the first 1x1 convolution of MobileNet V1 (32 -> 64 channels on 112x112) eight times in a row and
counts the page faults (`ru_minflt`) of each call.
"""

import resource
import sys
import time

import torch
from torch import nn


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def main(argv: list[str] | None = None) -> None:
    batch = int((argv or sys.argv[1:] or ["8"])[0])
    torch.manual_seed(0)
    x = torch.randn(batch, 32, 112, 112)
    conv = nn.Conv2d(32, 64, 1, bias=False).eval()
    with torch.inference_mode():
        for call in range(1, 9):
            before, start = faults(), time.perf_counter()
            conv(x)
            print(
                f"batch {batch}, call {call}: {1000 * (time.perf_counter() - start):.2f} ms, {faults() - before} page faults"
            )


if __name__ == "__main__":
    main()
