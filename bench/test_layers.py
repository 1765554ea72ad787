"""Layer level: a standard 3x3 convolution against the depthwise-separable pair of the same shape.

For every distinct layer shape of V1 Table 1 (and the V2 bottleneck depthwise/pointwise shapes): MACs from
fvcore and from the paper's formulas (asserted equal), and the latency of each, timed interleaved (NCHW; with
FGM_BENCH_FULL=1 also channels_last). `python -m bench.report` turns them into MAC and latency ratios.
"""

import pytest
import torch
from torch import nn

from bench.conftest import FULL
from evaluation.timing import interleaved
from layers import depthwise_separable_conv_macs, standard_conv_macs
from mobilenet.flops import count_macs

# (input channels M, output channels N, output size D_F, stride) of each depthwise-separable layer of
# V1 Table 1 at 224 (distinct shapes only; the 5x repeated 512 layer appears once).
V1_SHAPES = [
    (32, 64, 112, 1),
    (64, 128, 56, 2),
    (128, 128, 56, 1),
    (128, 256, 28, 2),
    (256, 256, 28, 1),
    (256, 512, 14, 2),
    (512, 512, 14, 1),
    (512, 1024, 7, 2),
    (1024, 1024, 7, 1),
]
# V2 bottlenecks as (hidden channels of the depthwise conv, output channels, output size, stride).
V2_SHAPES = [(96, 24, 56, 2), (144, 32, 28, 2), (192, 64, 14, 2), (384, 96, 14, 1), (576, 160, 7, 2), (960, 320, 7, 1)]
SHAPES = [("v1", *s) for s in V1_SHAPES] + [("v2", *s) for s in V2_SHAPES]
DEFAULT_SHAPES = SHAPES if FULL else [s for s in SHAPES if s[0] == "v1"] + SHAPES[-2:]


def build(kind: str, m: int, n: int, stride: int) -> nn.Module:
    if kind == "standard":
        return nn.Conv2d(m, n, 3, stride, 1, bias=False)
    if kind == "separable":
        return nn.Sequential(nn.Conv2d(m, m, 3, stride, 1, groups=m, bias=False), nn.Conv2d(m, n, 1, bias=False))
    if kind == "depthwise":
        return nn.Conv2d(m, m, 3, stride, 1, groups=m, bias=False)
    return nn.Conv2d(m, n, 1, bias=False)  # pointwise


KINDS = ("standard", "separable", "depthwise", "pointwise")


@pytest.mark.parametrize("table, m, n, size, stride", DEFAULT_SHAPES, ids=lambda v: str(v))
def test_layer_shape(benchmark, record, table, m, n, size, stride):
    """The four layers of one shape (and, with FGM_BENCH_FULL=1, their channels_last versions), timed against
    each other in alternating rounds; MACs from fvcore asserted equal to the paper's formulas."""
    torch.manual_seed(0)
    layouts = ["nchw", "channels_last"] if FULL else ["nchw"]
    contenders, macs = {}, {}
    for kind in KINDS:
        module = build(kind, m, n, stride).eval()
        x = torch.randn(1, m, size, size) if kind == "pointwise" else torch.randn(1, m, size * stride, size * stride)
        macs[kind], _ = count_macs(module, x.shape[-1], in_channels=m)
        for layout in layouts:
            if layout == "channels_last":
                module = module.to(memory_format=torch.channels_last)
                x = x.contiguous(memory_format=torch.channels_last)
            contenders[f"{kind}_{layout}"] = lambda module=module, x=x: (module(x), module(x), module(x))
    formulas = {
        "standard": standard_conv_macs(3, m, n, size),
        "separable": depthwise_separable_conv_macs(3, m, n, size),
        "depthwise": 3 * 3 * m * size * size,
        "pointwise": m * n * size * size,
    }
    assert macs == formulas  # fvcore agrees with the paper's formulas exactly
    with torch.no_grad():
        t = interleaved(contenders, rounds=9, warmup=2)
    record(
        table=table,
        m=m,
        n=n,
        size=size,
        stride=stride,
        kind="layers",
        dtype="float32",
        batch=1,
        macs=macs,
        ms={name: timing.median * 1000 / 3 for name, timing in t.items()},  # 3 calls per round
        spread={name: timing.spread for name, timing in t.items()},
    )
    with torch.no_grad():
        benchmark.pedantic(contenders["separable_nchw"], rounds=3, iterations=1, warmup_rounds=1)
