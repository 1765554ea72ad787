"""Optimizers with the parameter groups MobileNet training wants.

By default (`--no-decay-bn-bias`) training exempts batch-norm scales and shifts, biases and depthwise kernels from weight decay:
the V1 paper notes that depthwise filters have so few parameters that they need little or no decay
(section 4), and decaying normalisation parameters only fights the normalisation. `head_lr_mult` gives the
fresh classifier of a fine-tuned model a larger learning rate than the pretrained backbone.
"""

import torch
from torch import nn

OPTIMIZERS = ("sgd", "rmsprop", "adamw")


def parameter_groups(
    model: nn.Module, weight_decay: float, decay_bn_bias: bool, head_lr_mult: float = 1.0
) -> list[dict]:
    """Split trainable parameters into (decay, no decay) x (backbone, classifier) groups; empty ones dropped."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        for _name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
            exempt = not decay_bn_bias and (
                param.ndim <= 1 or isinstance(module, nn.modules.batchnorm._BatchNorm) or depthwise
            )
            is_head = module_name.startswith("classifier")
            groups.setdefault((exempt, is_head), []).append(param)
    return [
        {"params": params, "weight_decay": 0.0 if exempt else weight_decay, "lr_mult": head_lr_mult if is_head else 1.0}
        for (exempt, is_head), params in sorted(groups.items())
    ]


def create_optimizer(name: str, groups: list[dict], lr: float, momentum: float) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum), RMSprop (TensorFlow-style: the papers' optimizer) or AdamW."""
    for group in groups:
        group["lr"] = lr * group["lr_mult"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
    if name == "rmsprop":
        # The papers' setting: decay 0.9, momentum 0.9, epsilon 1.0 in TensorFlow's convention (on the root).
        return torch.optim.RMSprop(groups, lr=lr, alpha=0.9, eps=0.0316, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"--optimizer must be one of {OPTIMIZERS}, got {name!r}")
