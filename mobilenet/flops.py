"""Multiply-add counts with fvcore, counted the way the papers count them: convolutions and linear layers.

fvcore counts one multiply-add as one "flop". It also counts batch norm by default; the papers do not, and
`set_op_handle("aten::batch_norm", None)` does not remove it (None means "use the default"), so a handle
that returns an empty Counter does. Element-wise ops (ReLU6, the residual add) and pooling are left
uncounted, as in the papers (fvcore's default counts global pooling; it is switched off too); fvcore reports them as unsupported, which `count_macs` returns for checking.
"""

import warnings
from collections import Counter

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore's import touches torch.jit.script, which newer torch versions deprecate with a warning.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*deprecated", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*torch.jit.*", category=FutureWarning)
    from fvcore.nn import FlopCountAnalysis

# fvcore counts these by default; the papers count only convolutions and fully connected layers.
IGNORED_OPS = ("aten::batch_norm", "aten::adaptive_avg_pool2d")


def _no_flops(inputs, outputs) -> Counter:
    return Counter()


def count_macs(
    model: nn.Module, resolution: int | tuple[int, int], *, batch_size: int = 1, in_channels: int = 3
) -> tuple[int, dict]:
    """Multiply-adds of one forward pass of `model` in eval mode on a (batch, in_channels, H, W) input.

    Returns (total multiply-adds, {unsupported op name: occurrences}).
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            analysis = FlopCountAnalysis(model, torch.zeros(batch_size, in_channels, height, width, device=device))
            for op in IGNORED_OPS:
                analysis.set_op_handle(op, _no_flops)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            total = analysis.total()
            unsupported = dict(analysis.unsupported_ops())
    finally:
        model.train(was_training)
    return total, unsupported
