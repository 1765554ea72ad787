"""Training throughput of our V2 against a plain V2 written the torchvision way (references/models.py),
trained by the same loop in the same process, interleaved so both see the same machine state. Ours must
reach at least 0.95x the reference's images/s (a ratio within one run)."""

import time

import torch
import torch.nn.functional as F

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
    train_steps(ours, x, y, 1)
    train_steps(reference, x, y, 1)  # warm-up
    rates = {"ours": [], "reference": []}
    for _ in range(3):
        rates["ours"].append(train_steps(ours, x, y, 2))
        rates["reference"].append(train_steps(reference, x, y, 2))
    ours_rate, ref_rate = sorted(rates["ours"])[1], sorted(rates["reference"])[1]
    record(
        arch="v2",
        width=1.0,
        resolution=224,
        batch=32,
        dtype="float32",
        layout="nchw",
        mode="train throughput",
        ours_images_per_s=ours_rate,
        reference_images_per_s=ref_rate,
        ratio=ours_rate / ref_rate,
    )
    print(
        f"\ntraining images/s: ours {ours_rate:.1f}, torchvision-style reference {ref_rate:.1f}: {ours_rate / ref_rate:.3f}x"
    )
    assert ours_rate / ref_rate >= 0.95
    benchmark.pedantic(lambda: train_steps(ours, x, y, 1), rounds=2, iterations=1)
