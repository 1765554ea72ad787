"""Distillation (training/distill.py): the loss against a hand computation, the teacher's view against the
same crop prepared by hand, and `train.py --teacher` end to end."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import train
from data.cub import CUB200, pil_to_tensor
from mobilenet import load_checkpoint
from mobilenet.checkpoint import CheckpointError
from mobilenet.preprocess import Normalize
from tests.conftest import tiny_train_args
from training.distill import Teacher, distillation_loss


def test_distillation_loss_is_hinton_s():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    teacher = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 4.0]])
    labels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    t, w = 3.0, 0.25
    expected = 0.0
    for s_row, t_row, y_row in zip(student.tolist(), teacher.tolist(), labels.tolist()):
        p_s = [math.exp(v / t) / sum(math.exp(u / t) for u in s_row) for v in s_row]
        p_t = [math.exp(v / t) / sum(math.exp(u / t) for u in t_row) for v in t_row]
        kl = sum(b * (math.log(b) - math.log(a)) for a, b in zip(p_s, p_t))
        q = [math.exp(v) / sum(math.exp(u) for u in s_row) for v in s_row]
        ce = -sum(y * math.log(p) for y, p in zip(y_row, q))
        expected += (w * t * t * kl + (1 - w) * ce) / 2
    got = distillation_loss(student, teacher, labels, temperature=t, weight=w)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # A student that matches its teacher exactly pays nothing for the soft term.
    assert distillation_loss(teacher, teacher, labels, temperature=t, weight=1.0).item() == pytest.approx(0, abs=1e-6)


def test_the_teacher_sees_the_student_s_crop_at_its_own_resolution_and_normalization(tiny_checkpoint):
    model, card, _ = load_checkpoint(tiny_checkpoint)  # V2 0.35 at 64 px
    student = dataclasses.replace(card, resolution=48, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    teacher = Teacher(str(tiny_checkpoint), student, torch.device("cpu"))
    assert teacher.load_resolution == 64
    torch.manual_seed(0)
    pixels = torch.rand(3, 3, 64, 64)  # a batch of crops in [0, 1], as the loader draws them at 64 px
    batch = Normalize(student.mean, student.std)(pixels)
    by_hand = model.eval()(Normalize(card.mean, card.std)(pixels))
    torch.testing.assert_close(teacher.logits(batch), by_hand, rtol=1e-4, atol=1e-5)
    shrunk = F.interpolate(batch, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(teacher.student_view(batch), shrunk)


def test_train_with_a_teacher(tiny_synthetic_root, tiny_checkpoint, tmp_path):
    args = tiny_train_args(tiny_synthetic_root, tmp_path / "s", "--arch", "v1", "--teacher", str(tiny_checkpoint))
    train.main([*args, "--distill-weight", "1"])  # the teacher's soft targets only
    train.main(tiny_train_args(tiny_synthetic_root, tmp_path / "alone", "--arch", "v1"))  # its twin, labels only
    # The distilled student is closer to its teacher (KL at the distillation temperature, on the test photos)
    # than the same student trained on the labels alone.
    photos = CUB200(tiny_synthetic_root, "test")
    photos = [pil_to_tensor(photos.load_image(i)) for i in range(len(photos))]

    def logits(checkpoint) -> torch.Tensor:
        model, card, _ = load_checkpoint(checkpoint)
        view = card.transform()
        with torch.no_grad():
            return model.eval()(torch.stack([view(p) for p in photos])) / 4.0

    target = logits(tiny_checkpoint).log_softmax(1)

    def kl_to_teacher(run: str) -> float:
        log_q = logits(tmp_path / run / "last.pt").log_softmax(1)
        return F.kl_div(log_q, target, log_target=True, reduction="batchmean").item()

    assert kl_to_teacher("s") < kl_to_teacher("alone")
    state = torch.load(tmp_path / "s" / "best.pt", weights_only=True)
    assert state["config"]["teacher"] == str(tiny_checkpoint) and state["config"]["distill_weight"] == 1.0
    wrong = tiny_train_args(tiny_synthetic_root, tmp_path / "w", "--classes", "1-3", "--teacher", str(tiny_checkpoint))
    with pytest.raises(CheckpointError, match="--teacher .*trained on 4 classes"):
        train.main(wrong)
