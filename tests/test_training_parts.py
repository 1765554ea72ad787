"""Schedules, parameter groups, mixup/cutmix and EMA against hand computations."""

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from mobilenet import create_model
from tests.conftest import REPO
from training.ema import ModelEMA
from training.mixing import mix_batch, one_hot
from training.optim import create_optimizer, parameter_groups
from training.schedules import Schedule


def test_cosine_with_warmup_by_hand():
    s = Schedule("cosine", epochs=10, steps_per_epoch=10, warmup_epochs=2, warmup_start=0.0)
    assert s.factor(0) == 0.0
    assert s.factor(10) == pytest.approx(0.5 * (1 + math.cos(0)) * 0.5)  # half-way through warm-up
    assert s.factor(20) == pytest.approx(1.0)
    assert s.factor(60) == pytest.approx(0.5)  # half-way through the cosine part (epochs 2..10)
    assert s.factor(100) == pytest.approx(0.0, abs=1e-12)
    assert s.factor(61) < s.factor(60)  # stepped per iteration


def test_constant_and_onecycle():
    assert Schedule("constant", 10, 4).factor(37) == 1.0
    one = Schedule("onecycle", 10, 10)
    assert one.factor(0) == pytest.approx(1 / 25)
    assert one.factor(30) == pytest.approx(1.0)
    assert one.factor(100) == pytest.approx(1 / 25e4)
    with pytest.raises(ValueError, match="--schedule"):
        Schedule("linear", 10, 1)


def test_parameter_groups_exempt_bn_bias_and_depthwise():
    model = create_model("v2", width_mult=0.35, num_classes=5)
    groups = parameter_groups(model, 1e-4, False, head_lr_mult=10)
    by_id = {id(p): g for g in groups for p in g["params"]}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    dw = model.features[2].conv_dw.conv.weight
    pw = model.features[2].conv_pw.conv.weight
    assert by_id[id(dw)]["weight_decay"] == 0 and by_id[id(pw)]["weight_decay"] == 1e-4
    assert by_id[id(model.features[2].conv_pw.bn.weight)]["weight_decay"] == 0
    assert by_id[id(model.classifier.bias)]["weight_decay"] == 0
    assert by_id[id(model.classifier.weight)]["lr_mult"] == 10 and by_id[id(pw)]["lr_mult"] == 1
    optimizer = create_optimizer("sgd", groups, 0.1, 0.9)
    assert {g["lr"] for g in optimizer.param_groups} == {0.1, 1.0}
    assert all(g["weight_decay"] == 1e-4 for g in parameter_groups(model, 1e-4, True))


def test_one_hot_smoothing_sums_to_one():
    targets = one_hot(torch.tensor([0, 2]), 4, 0.1)
    assert targets[0].tolist() == pytest.approx([0.925, 0.025, 0.025, 0.025])
    assert targets.sum(1).tolist() == pytest.approx([1, 1])


def test_mixup_and_cutmix_keep_targets_consistent_with_images():
    torch.manual_seed(0)
    images = torch.stack([torch.full((3, 8, 8), float(i)) for i in range(4)])  # image i is constant i
    labels = torch.arange(4)
    mixed, targets = mix_batch(images, labels, 4, mixup=0.4, cutmix=0.0, smoothing=0.0)
    # Mixup: each mixed image's value equals the target-weighted mean of the source values.
    assert torch.allclose(mixed[:, 0, 0, 0], targets @ torch.arange(4.0))
    mixed, targets = mix_batch(images, labels, 4, mixup=0.0, cutmix=1.0, smoothing=0.0)
    # CutMix: the target weights are exactly the pixel fractions of each source.
    for i in range(4):
        fractions = torch.tensor([(mixed[i, 0] == k).float().mean() for k in range(4)])
        assert torch.allclose(fractions, targets[i], atol=1e-6)
    same, soft = mix_batch(images, labels, 4, mixup=0.0, cutmix=0.0, smoothing=0.0)
    assert same is images and torch.equal(soft, torch.eye(4))


def test_ema_by_hand():
    model = nn.Linear(1, 1, bias=False)
    nn.init.constant_(model.weight, 0.0)
    ema = ModelEMA(model, decay=0.9)
    nn.init.constant_(model.weight, 1.0)
    ema.update(model)  # decay min(0.9, 2/11)
    assert ema.module.weight.item() == pytest.approx(1 - 2 / 11)
    ema.update(model)  # decay min(0.9, 3/12) = 0.25
    assert ema.module.weight.item() == pytest.approx(1 - 0.25 * (2 / 11))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tuned_malloc_keeps_freed_memory_so_repeated_forward_passes_cost_no_page_faults():
    """Five forward passes of V2 1.0's fast path at batch 8, 224 px, in fresh processes. The default allocator
    maps and unmaps the large activations each time (about 24,000 page faults per pass here); `tune_malloc`
    keeps freed memory, so once warm a pass faults no page in. Before the fix mallopt's int wrapped the trim
    threshold to 0 and every pass still took about 9,400."""
    script = (
        "import resource, sys, torch\n"
        "from training.runtime import tune_malloc\n"
        "from mobilenet import create_model, optimize_for_inference\n"
        "assert sys.argv[1] == 'default' or tune_malloc()\n"
        "model = optimize_for_inference(create_model('v2', num_classes=10).eval())\n"
        "x = torch.randn(8, 3, 224, 224).contiguous(memory_format=torch.channels_last)\n"
        "faults = []\n"
        "with torch.inference_mode():\n"
        "    for _ in range(5):\n"
        "        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "        model(x)\n"
        "        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
        "print(*faults)\n"
    )
    faults = {}
    for mode in ("default", "tuned"):
        result = subprocess.run(
            [sys.executable, "-c", script, mode], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
        )
        faults[mode] = [int(n) for n in result.stdout.split()]
    warm_default, warm_tuned = faults["default"][2:], faults["tuned"][2:]
    assert min(warm_default) > 5000, faults  # the control: activations mapped anew on every pass
    assert max(warm_tuned) < 0.01 * min(warm_default), faults
