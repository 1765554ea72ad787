"""Progress of a loop: a tqdm bar on a terminal, and a summary line every `interval` seconds otherwise.

A bar redraws itself with carriage returns, which in a log file (`python train.py > log`, CI, `nohup`) turns
into one line per frame; so when stderr is not a terminal, `Progress` prints plain lines instead.
"""

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tqdm import tqdm


class Progress:
    """Iterate `items`; `update(**fields)` sets what the bar or the next summary line shows."""

    def __init__(
        self,
        items: Iterable,
        *,
        total: int,
        desc: str,
        enabled: bool = True,
        interval: float = 30.0,
        terminal: bool | None = None,
        write: Callable[[str], None] = print,
    ) -> None:
        self.items, self.total, self.desc, self.enabled = items, total, desc, enabled
        self.interval, self.write = interval, write
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.fields: dict[str, Any] = {}
        self.bar: tqdm | None = None

    def __iter__(self) -> Iterator:
        if self.enabled and self.terminal:
            self.bar = tqdm(
                self.items, total=self.total, desc=self.desc, leave=False, dynamic_ncols=True, mininterval=1.0
            )
            yield from self.bar
            return
        start = last = time.monotonic()
        for done, item in enumerate(self.items, 1):
            yield item
            now = time.monotonic()
            if self.enabled and now - last >= self.interval and done < self.total:
                shown = " ".join(f"{k} {v}" for k, v in self.fields.items())
                left = eta(now - start, done, self.total)
                self.write(f"{self.desc}: {done}/{self.total} {shown} eta {left}".replace("  ", " "))
                last = now

    def update(self, **fields: Any) -> None:
        self.fields = fields
        if self.bar is not None:
            self.bar.set_postfix(fields)


def eta(elapsed: float, done: int, total: int) -> str:
    """The time left for `total` steps at the pace of the `done` ones that took `elapsed` seconds."""
    return duration(elapsed / done * (total - done))


def duration(seconds: float) -> str:
    """`seconds` as `1h02m`, `4m05s` or `12s`."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
