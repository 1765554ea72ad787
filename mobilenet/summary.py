"""`model_summary`: the model written out as the papers' tables, one row per layer.

Rows are the layers a paper's table lists: every ConvBNAct (named by operator: "conv 3x3 s2", "conv dw 3x3
s1", "conv 1x1", "conv 1x1 linear"), the global pool and the classifier, with input and output shapes,
parameters (batch norm included) and multiply-adds (convolutions and linear layers, as the papers count).
Run `python -m mobilenet.summary --arch v1 --width 0.75 --resolution 192` to print one.
"""

import argparse
from dataclasses import dataclass

import torch
from torch import nn

from layers import ConvBNAct
from mobilenet.factory import create_model


@dataclass
class LayerRow:
    name: str
    operator: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    macs: int


def _operator(module: nn.Module) -> str:
    if isinstance(module, ConvBNAct):
        conv = module.conv
        k, s = conv.kernel_size[0], conv.stride[0]
        kind = "conv dw" if conv.groups > 1 and conv.groups == conv.in_channels else "conv"
        linear = " linear" if isinstance(module.act, nn.Identity) else ""
        return f"{kind} {k}x{k} s{s}{linear}"
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return "avg pool (global)"
    return "fc"


def _macs(module: nn.Module, output: torch.Tensor) -> int:
    if isinstance(module, ConvBNAct):
        conv = module.conv
        per_output = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        return output[0].numel() * per_output
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def model_summary(model: nn.Module, resolution: int) -> tuple[list[LayerRow], dict[str, int]]:
    """Rows of (name, operator, input shape, output shape, params, MACs) for one image, and the totals."""
    rows: list[LayerRow] = []
    hooks = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            rows.append(
                LayerRow(
                    name=name,
                    operator=_operator(module),
                    input_shape=tuple(inputs[0].shape[1:]),
                    output_shape=tuple(output.shape[1:]),
                    params=sum(p.numel() for p in module.parameters()),
                    macs=_macs(module, output),
                )
            )

        return hook

    for name, module in model.named_modules():
        if isinstance(module, (ConvBNAct, nn.AdaptiveAvgPool2d, nn.Linear)):
            hooks.append(module.register_forward_hook(record(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, resolution, resolution, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    totals = {
        "params": sum(p.numel() for p in model.parameters()),
        "macs": sum(row.macs for row in rows),
    }
    return rows, totals


def format_summary(rows: list[LayerRow], totals: dict[str, int]) -> str:
    """The rows as a fixed-width table, as printed by `python -m mobilenet.summary`."""

    def shape(s: tuple[int, ...]) -> str:
        return " x ".join(str(d) for d in (s[1:] + s[:1] if len(s) == 3 else s))

    lines = [f"{'layer':<26} {'operator':<20} {'input (HxWxC)':<16} {'output (HxWxC)':<16} {'params':>10} {'MACs':>13}"]
    for row in rows:
        lines.append(
            f"{row.name:<26} {row.operator:<20} {shape(row.input_shape):<16} {shape(row.output_shape):<16} "
            f"{row.params:>10,} {row.macs:>13,}"
        )
    lines.append(f"{'total':<26} {'':<20} {'':<16} {'':<16} {totals['params']:>10,} {totals['macs']:>13,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print a MobileNet as the papers' tables.")
    parser.add_argument("--arch", choices=["v1", "v2"], default="v2", help="architecture (default: v2)")
    parser.add_argument("--width", type=float, default=1.0, help="width multiplier (default: 1.0)")
    parser.add_argument("--resolution", type=int, default=224, help="input size (default: 224)")
    parser.add_argument("--num-classes", type=int, default=1000, help="classifier outputs (default: 1000)")
    args = parser.parse_args(argv)
    model = create_model(args.arch, width_mult=args.width, num_classes=args.num_classes)
    print(format_summary(*model_summary(model, args.resolution)))


if __name__ == "__main__":
    main()
