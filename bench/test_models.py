"""Model level: V1 and V2 across widths and resolutions, batch 1 and 32, inference and a training step.

Default grid: V1 {0.25, 0.5, 1.0} and V2 {0.35, 0.5, 1.0} at 224 and 128, batch 1 and 32 (inference) and
batch 32 at 224 for a training step of the width-1.0 models. FGM_BENCH_FULL=1 adds 0.75, V2 1.4,
resolutions 160 and 192, and training steps for every width.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from bench.conftest import FULL
from evaluation.timing import interleaved
from mobilenet import create_model
from mobilenet.flops import count_macs

WIDTHS = (
    {"v1": [0.25, 0.5, 0.75, 1.0], "v2": [0.35, 0.5, 0.75, 1.0, 1.4]}
    if FULL
    else {"v1": [0.25, 0.5, 1.0], "v2": [0.35, 0.5, 1.0]}
)
RESOLUTIONS = [128, 160, 192, 224] if FULL else [128, 224]
GRID = [(arch, w, r) for arch, widths in WIDTHS.items() for w in widths for r in RESOLUTIONS]


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("arch, resolution", [(a, r) for a in WIDTHS for r in RESOLUTIONS])
def test_inference_across_widths(benchmark, record, arch, resolution, batch):
    """All widths of one architecture at one resolution and batch, timed against each other in alternating
    rounds, so that the latency-versus-width curve is not bent by whatever else the machine was doing."""
    torch.manual_seed(0)
    models = {w: create_model(arch, width_mult=w, num_classes=1000).eval() for w in WIDTHS[arch]}
    x = torch.randn(batch, 3, resolution, resolution)
    with torch.no_grad():
        t = interleaved({w: (lambda m=m: m(x)) for w, m in models.items()}, rounds=8 if batch == 1 else 5)
    widths = []
    for w, model in models.items():
        macs, _ = count_macs(model, resolution)
        params = sum(p.numel() for p in model.parameters())
        widths.append(dict(width=w, macs=macs, params=params, median_s=t[w].median, spread=t[w].spread))
    record(
        arch=arch, resolution=resolution, batch=batch, mode="inference", dtype="float32", layout="nchw", widths=widths
    )
    with torch.no_grad():
        benchmark.pedantic(models[max(models)], args=(x,), rounds=3, iterations=1, warmup_rounds=1)
    # The widest model does 6-14x the narrowest's multiply-adds (the papers' tables): timed in the same
    # interleaved rounds, it cannot be faster.
    narrow, wide = min(models), max(models)
    assert t[wide].median > t[narrow].median, (t[wide], t[narrow])


TRAIN_GRID = [(a, w, 224) for a, w, _ in GRID if _ == 224 and (FULL or w == 1.0)]


@pytest.mark.parametrize("arch, width, resolution", TRAIN_GRID)
def test_training_step(benchmark, record, arch, width, resolution):
    torch.manual_seed(0)
    model = create_model(arch, width_mult=width, num_classes=200).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(32, 3, resolution, resolution), torch.randint(0, 200, (32,))

    # What is timed must be a whole training step: the first one is checked against SGD by hand (p - lr * grad,
    # the gradient taken apart by torch.autograd.grad on a copy of the model).
    reference = copy.deepcopy(model)
    torch.manual_seed(1)  # the same dropout mask in the reference and in the first timed step
    grads = torch.autograd.grad(F.cross_entropy(reference(x), y), list(reference.parameters()))
    expected = [(p - 0.01 * g).detach() for p, g in zip(reference.parameters(), grads)]
    after_first: list[torch.Tensor] = []

    def step():
        if not after_first:
            torch.manual_seed(1)
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        if not after_first:
            after_first.extend(p.detach().clone() for p in model.parameters())

    macs, _ = count_macs(model, resolution)
    record(
        arch=arch,
        width=width,
        resolution=resolution,
        batch=32,
        mode="train step",
        dtype="float32",
        layout="nchw",
        macs=macs,
        params=sum(p.numel() for p in model.parameters()),
    )
    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    for got, want in zip(after_first, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
