"""Exponential moving average of model weights (Polyak averaging), evaluated in place of the raw weights.

Batch-norm buffers are copied, not averaged. The decay is warmed up as min(decay, (1 + n) / (10 + n)) over
the first updates, as TensorFlow's ExponentialMovingAverage with num_updates does, so that a short run is
not dominated by the random initialisation.
"""

import copy

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema_param, param in zip(self.module.parameters(), model.parameters()):
            ema_param.mul_(decay).add_(param.detach(), alpha=1 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]
