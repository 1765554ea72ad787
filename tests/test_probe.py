"""The linear probe (`training/probe.py`, `train.py --probe-head`): the fit is the penalised optimum, the
held-out sixth is stratified, and train.py starts its head from the probe of its own start's features."""

import pytest
import torch
import torch.nn.functional as F

import train
from cli import UsageError
from mobilenet import load_checkpoint
from references.models import TorchvisionStyleMobileNetV2
from tests.conftest import tiny_train_args
from training.probe import HOLDOUT, fit_logistic, fit_probe, stratified_holdout


def _blobs(n: int = 300, dim: int = 16, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(n) % classes
    return torch.randn(classes, dim)[labels] + 0.7 * torch.randn(n, dim), labels


@pytest.mark.parametrize("l2", [1e-1, 1e-3])
def test_the_probe_is_the_penalised_optimum(l2):
    """A convex objective's minimum is where its gradient vanishes: computed independently in float64 by
    autograd at the returned solution, it is zero to L-BFGS's tolerance, and a nearby point costs more."""
    features, labels = _blobs()
    weight, bias = fit_logistic(features, labels, 4, l2)
    w, b = weight.double().requires_grad_(True), bias.double().requires_grad_(True)

    def objective(w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(features.double() @ w.T + b, labels) + l2 * w.pow(2).sum()

    objective(w, b).backward()
    assert w.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-4
    nudged = objective(w.detach() + 1e-2 * torch.randn_like(w), b.detach())
    assert nudged > objective(w.detach(), b.detach())


def test_a_stronger_penalty_gives_smaller_weights_and_the_held_out_sixth_is_stratified():
    features, labels = _blobs()
    norms = [fit_logistic(features, labels, 4, l2)[0].norm().item() for l2 in (1e-1, 1e-2, 1e-3)]
    assert norms[0] < norms[1] < norms[2]
    held = stratified_holdout(labels, seed=0)
    for label in range(4):  # 75 per class: round(75 / 6) = 12 of each held out
        assert held[labels == label].sum() == round(75 / HOLDOUT)
    assert torch.equal(held, stratified_holdout(labels, seed=0)) and not torch.equal(
        held, stratified_holdout(labels, 1)
    )
    probe = fit_probe(features, labels, 4, seed=0, log=lambda _: None)
    assert (F.linear(features, probe.weight, probe.bias).argmax(1) == labels).float().mean() > 0.9
    # The held-out sixth's probabilities come from the fit without it, at the chosen strength.
    assert torch.equal(probe.held_labels, labels[held]) and probe.held_out.shape == (int(held.sum()), 4)
    unseen = fit_logistic(features[~held], labels[~held], 4, probe.l2)
    torch.testing.assert_close(probe.held_out, F.linear(features[held], *unseen).softmax(1), rtol=1e-3, atol=1e-4)


def test_train_py_starts_its_head_from_the_probe_of_its_start_s_features(tiny_synthetic_root, tmp_path):
    """`--probe-head --epochs 0`: the saved head is the probe fitted on the training images' pooled features under
    the test view (recomputed here from the saved model, whose backbone is the start's), and the run reports
    its accuracy before any training."""
    start = TorchvisionStyleMobileNetV2(num_classes=1000, width_mult=0.5)
    for module in start.modules():  # batch-norm statistics of images, so that the random features vary
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        start.train()(torch.rand(64, 3, 48, 48) * 4 - 2)
    torch.save(start.state_dict(), tmp_path / "tv.pth")
    args = tiny_train_args(tiny_synthetic_root, tmp_path / "run", "--pretrained", str(tmp_path / "tv.pth"))
    args = [a for a in args if a not in ("--arch", "v2", "--width", "0.25")]
    result = train.main([*args, "--probe-head", "--epochs", "0", "--val-fraction", "0"])
    assert result["epoch"] == 0 and result["test_top1"] > 1 / 4  # better than chance on 4 classes
    model, card, info = load_checkpoint(tmp_path / "run" / "last.pt")
    from training.config import RunConfig

    dataset = RunConfig.of_checkpoint(info).dataset("train", card.transform())
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    labels = torch.tensor([dataset[i][1] for i in range(len(dataset))])
    with torch.no_grad():
        features = model.eval().forward_features(images).mean((2, 3))
    probe = fit_probe(features, labels, len(card.class_names), seed=0, log=lambda _: None)
    weight = probe.weight
    assert weight.abs().max() > 0.01  # a real head, not the zeros it starts from
    torch.testing.assert_close(model.classifier.weight, weight, rtol=1e-3, atol=1e-3)
    with pytest.raises(UsageError, match="--probe-head and --transplant-head"):
        train.main([*args, "--probe-head", "--transplant-head", "--force"])
    with pytest.raises(UsageError, match="--probe-head needs --pretrained"):
        train.main(tiny_train_args(tiny_synthetic_root, tmp_path / "r2", "--probe-head"))
