"""Learning-rate schedules as one multiplicative factor of the base lr per optimizer step.

Every schedule is a function of the fractional epoch t = step / steps_per_epoch, evaluated each iteration:
cosine and onecycle change every step; constant never. A linear warm-up from `warmup_start` to 1 over `warmup_epochs` multiplies any of them
(onecycle has its own warm-up). Driven through `torch.optim.lr_scheduler.LambdaLR`, whose state_dict
(the step count) is all a resumed run needs.
"""

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("cosine", "onecycle", "constant")


@dataclass
class Schedule:
    name: str
    epochs: int
    steps_per_epoch: int
    warmup_epochs: float = 0.0
    warmup_start: float = 0.01
    onecycle_pct: float = 0.3  # onecycle: fraction of the run spent rising

    def __post_init__(self) -> None:
        if self.name not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {SCHEDULES}, got {self.name!r}")

    def factor(self, step: int) -> float:
        t = step / self.steps_per_epoch
        total = self.epochs
        # onecycle, torch's OneCycleLR shape with its defaults: lr/25 -> lr (cosine rise), then down to the
        # start value / 1e4, i.e. lr/2.5e5 (cosine fall).
        if self.name == "onecycle":
            rise = self.onecycle_pct * total
            if t < rise:
                return _cos_interp(1 / 25, 1.0, t / rise)
            return _cos_interp(1.0, 1 / 25e4, min(1.0, (t - rise) / max(total - rise, 1e-9)))
        if self.name == "cosine":
            span = max(total - self.warmup_epochs, 1e-9)
            progress = min(1.0, max(0.0, t - self.warmup_epochs) / span)
            value = 0.5 * (1 + math.cos(math.pi * progress))
        else:
            value = 1.0
        if self.warmup_epochs > 0 and t < self.warmup_epochs:
            value *= self.warmup_start + (1 - self.warmup_start) * t / self.warmup_epochs
        return value

    def scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, self.factor)


def _cos_interp(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * fraction))
