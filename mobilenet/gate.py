""" "Is there a bird?": the probability that a photo shows no bird, beside the species.

Google's iNaturalist-birds file answers it itself: its last output is "background". A model fine-tuned on CUB
has no such output; one started from that file keeps the file's 965-way head as its gate (`GATE_KEY` in the
checkpoint), read on the same pooled features as its own head: exact for a probe (the features are the file's,
frozen), an approximation once fine-tuning has moved them. The threshold on the no-bird probability is chosen
on bird photos that are not test photos (98% of them kept) and travels in the card (`gate_threshold`).

A gated model returns K logits and then the no-bird probability, one tensor (N, K + 1), so ONNX and ExecuTorch
exports carry the gate with the model.
"""

import torch
from torch import nn

from mobilenet.common import MobileNetBase

GATE_KEY = "gate"  # in a checkpoint: {"weight": (G, F), "bias": (G,), "no_bird": index of the no-bird output}
GATE_KEPT = 0.98  # the operating point: the share of bird photos (not test photos) the gate keeps
# ImageNet-1k's bird classes (0-based, in the standard 1,000-class order): the classes under WordNet's "bird"
# synset n01503061, from "cock" (7) to "great grey owl" (24), "black grouse" (80) to "black swan" (100) and
# "white stork" (127) to "albatross" (146).
IMAGENET_BIRDS = (*range(7, 25), *range(80, 101), *range(127, 147))


class Gated(nn.Module):
    """`model`'s logits and, from a second head on the same pooled features, the probability of no bird."""

    def __init__(self, model: MobileNetBase, weight: torch.Tensor, bias: torch.Tensor, no_bird: int) -> None:
        super().__init__()
        self.model = model
        self.gate = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.gate.weight.copy_(weight)
            self.gate.bias.copy_(bias)
        self.no_bird = no_bird

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.model.pool(self.model.forward_features(x)).flatten(1)
        logits = self.model.classifier(self.model.dropout(pooled))
        no_bird = self.gate(pooled).softmax(1)[:, self.no_bird]
        return torch.cat([logits, no_bird[:, None].to(logits.dtype)], dim=1)


def gate_of(head: nn.Module, labels: tuple[str, ...]) -> dict | None:
    """The gate a run started from a file with this head and these output labels keeps: the head's weights and
    the index of its "background" output (None when the start has no such output)."""
    if "background" not in labels or not isinstance(head, nn.Linear):
        return None
    return {
        "weight": head.weight.detach().clone(),
        "bias": head.bias.detach().clone(),
        "no_bird": labels.index("background"),
    }


def gate_in_use(card_gate_threshold: float | None, info: dict) -> dict | None:
    """The gate a loaded checkpoint answers with (`load_checkpoint`'s info): its stored head, where its card
    holds the threshold chosen for it; None otherwise."""
    return info.get(GATE_KEY) if card_gate_threshold is not None else None


def gate_threshold(no_bird: torch.Tensor) -> float:
    """The no-bird probability from which a photo is "no bird": the one that keeps GATE_KEPT of these bird
    photos' probabilities below it."""
    return float(torch.quantile(no_bird.double(), GATE_KEPT))


def no_bird_probability(gate: dict, pooled: torch.Tensor) -> torch.Tensor:
    """The gate's no-bird probability for pooled features (N, F)."""
    return torch.nn.functional.linear(pooled, gate["weight"], gate["bias"]).softmax(1)[:, gate["no_bird"]]
