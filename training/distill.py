"""Knowledge distillation: a small student learns from a trained teacher's softened predictions.

Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural Network": the student matches the
teacher's class probabilities at temperature T (soft targets: which wrong species look alike), weighted
against the usual loss on the labels; the soft term is scaled by T^2 so that its gradients keep their size
as T changes. Beyer et al. 2022 ("Knowledge distillation: A good teacher is patient and consistent") show
that the teacher must see the very crop the student sees: here the loader draws each random crop at the
teacher's resolution, the teacher classifies it, and the student gets the same crop resized to its own
resolution (antialiased), so a V1 0.25/128 student learns from a V2 1.0/224 teacher on identical views.

`python train.py --pretrained STUDENT_WEIGHTS --teacher runs/v2/best.pt` (`--distill-temperature`,
`--distill-weight`).
"""

import torch
import torch.nn.functional as F
from torch import nn

from mobilenet.card import ModelCard
from mobilenet.checkpoint import CheckpointError, load_checkpoint
from mobilenet.inference import optimize_for_inference
from mobilenet.preprocess import resize
from training.mixing import soft_target_loss


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    weight: float,
) -> torch.Tensor:
    """`weight * T^2 * KL(teacher_T || student_T) + (1 - weight) * CE(student, targets)`, averaged over the
    batch; `targets` are soft label rows (label smoothing, mixup)."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher = F.softmax(teacher_logits.float() / temperature, dim=1)
    soft = F.kl_div(log_student, teacher, reduction="batchmean") * temperature**2
    return weight * soft + (1 - weight) * soft_target_loss(student_logits, targets)


class Teacher:
    """A frozen trained model that turns the student's batches into teacher logits."""

    def __init__(self, path: str, student: ModelCard, device: torch.device) -> None:
        model, card, _ = load_checkpoint(path)
        names, wanted = card.class_names, student.class_names
        if names != wanted:
            raise CheckpointError(
                f"--teacher {path}: trained on {len(names)} classes ({names[0]}, ...), this run has "
                f"{len(wanted)} ({wanted[0]}, ...)"
            )
        # The teacher only runs forward, once per training batch: its batch norms are folded and its tensors
        # channels_last, the serving fast path (the same function to 1e-4, and most of a distilled epoch's time).
        self.model: nn.Module = optimize_for_inference(model.to(device), channels_last=True)
        self.resolution, self.student_resolution = card.resolution, student.resolution
        # The loader normalizes with the student's mean/std; the teacher may expect others (an ImageNet-scaled
        # V1 teaching an Inception-scaled V2): x_teacher = x * scale + shift per channel.
        mean_s, std_s = torch.tensor(student.mean), torch.tensor(student.std)
        mean_t, std_t = torch.tensor(card.mean), torch.tensor(card.std)
        self.scale = (std_s / std_t).view(1, 3, 1, 1).to(device)
        self.shift = ((mean_s - mean_t) / std_t).view(1, 3, 1, 1).to(device)

    @property
    def load_resolution(self) -> int:
        """The size the training loader draws its crops at: the larger of teacher's and student's."""
        return max(self.resolution, self.student_resolution)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Teacher logits for a batch drawn at `load_resolution`, normalized for the student."""
        x = resize(images, (self.resolution, self.resolution)) * self.scale + self.shift
        return self.model(x).float()

    def student_view(self, images: torch.Tensor) -> torch.Tensor:
        """The same batch at the student's resolution."""
        return resize(images, (self.student_resolution, self.student_resolution))
