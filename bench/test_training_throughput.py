"""Training throughput of our V2 against a plain V2 written the torchvision way (references/models.py),
trained by the same loop in the same process, interleaved so both see the same machine state. The target
(at least 0.95x the reference's images/s) is a verdict in the report; the assertion catches a gross regression."""

import time

import torch
import torch.nn.functional as F

from bench.conftest import V2_BATCH32, verdict
from evaluation.timing import interleaved
from mobilenet import create_model
from references.models import TorchvisionStyleMobileNetV2


def train_steps(model, x, y, steps: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return steps * x.shape[0] / (time.perf_counter() - start)


def test_ours_versus_reference_v2(benchmark, record):
    torch.manual_seed(0)
    ours, reference = create_model("v2", num_classes=200), TorchvisionStyleMobileNetV2(num_classes=200)
    x, y = torch.randn(32, 3, 224, 224), torch.randint(0, 200, (32,))
    t = interleaved({"ours": lambda: train_steps(ours, x, y, 1), "reference": lambda: train_steps(reference, x, y, 1)})
    ours_rate, ref_rate = x.shape[0] / t["ours"].median, x.shape[0] / t["reference"].median
    record(
        **V2_BATCH32,
        layout="nchw",
        mode="train throughput",
        ours_images_per_s=ours_rate,
        reference_images_per_s=ref_rate,
        ratio=ours_rate / ref_rate,
        ours_spread=t["ours"].spread,
        reference_spread=t["reference"].spread,
        verdicts=[
            verdict(
                "training images/s, ours / torchvision-style V2",
                0.95,
                ours_rate / ref_rate,
                max(t["ours"].spread, t["reference"].spread),
            )
        ],
    )
    print(
        f"\ntraining images/s: ours {ours_rate:.1f}, torchvision-style reference {ref_rate:.1f}: {ours_rate / ref_rate:.3f}x"
    )
    assert ours_rate / ref_rate >= 0.7, "gross regression: our V2 trains far slower than a plain one"
    benchmark.pedantic(lambda: train_steps(ours, x, y, 1), rounds=2, iterations=1)
