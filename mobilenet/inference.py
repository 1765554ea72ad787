"""`optimize_for_inference`: the fast path for serving a trained model on CPU (or GPU).

1. Fold every batch norm into the convolution before it (eval-mode BN is an affine map per channel:
   W' = W * gamma / sqrt(var + eps), b' = beta - gamma * mean / sqrt(var + eps)), so each ConvBNAct costs
   one convolution; BN modules become Identity. Stride-1 TensorFlow-"SAME" convolutions (imported Google
   weights) become plain `nn.Conv2d`s with symmetric padding, the same function.
2. channels_last (NHWC) memory format, which oneDNN's depthwise and 1x1 kernels prefer on CPU.
3. Optionally `torch.compile` (Inductor) on top, with freezing of the weights for inference.

The result computes the eval-mode function of the input model (tested to 1e-4 on the logits).
"""

import copy

import torch
from torch import nn

from layers import Conv2dSame, ConvBNAct
from layers.padding import same_padding, symmetric_form


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    """A convolution's kernel size, stride or dilation as the (height, width) pair it always is in Conv2d."""
    return (value, value) if isinstance(value, int) else (value[0], value[1])


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of `conv` with eval-mode `bn` folded into its weight and a new bias."""
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise ValueError("fold_batchnorm needs a batch norm with running statistics")
    scale = bn.weight / torch.sqrt(var + bn.eps)
    fused = copy.deepcopy(conv)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    fused.bias = nn.Parameter(bn.bias + (bias - mean) * scale)
    return fused


def plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A stride-1 `Conv2dSame` as the equivalent `nn.Conv2d` (TensorFlow "SAME" is symmetric at stride 1 for
    odd kernels); any other convolution is returned as it is. Exporters and quantizers match `nn.Conv2d`."""
    k, s, d = _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
    if not isinstance(conv, Conv2dSame) or s != (1, 1) or d != (1, 1) or not (k[0] % 2 and k[1] % 2):
        return conv
    plain = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        k,
        padding=(k[0] // 2, k[1] // 2),
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    plain.load_state_dict(conv.state_dict())
    return plain


@torch.no_grad()
def bake_same_padding(model: nn.Module, resolution: int) -> nn.Module:
    """`model` (changed in place) for one input size: every remaining `Conv2dSame` becomes a plain `nn.Conv2d`
    with the symmetric padding and zero-fronted kernel that compute its "SAME" padding for that size
    (`layers.padding.symmetric_form`). For int8 quantization, whose
    x86 quantizer matches `nn.Conv2d` only; the model then gives wrong results at other input sizes."""
    sizes: dict[nn.Module, tuple[int, int]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda m, args: sizes.__setitem__(m, tuple(args[0].shape[-2:])))
        for m in model.modules()
        if isinstance(m, Conv2dSame)
    ]
    was_training = model.training
    model.eval()(torch.zeros(1, 3, resolution, resolution))
    model.train(was_training)
    for h in hooks:
        h.remove()
    for module in model.modules():
        if isinstance(module, ConvBNAct) and module.conv in sizes:
            conv = module.conv
            (height, width), k, s, d = sizes[conv], _pair(conv.kernel_size), _pair(conv.stride), _pair(conv.dilation)
            padding = (*same_padding(height, k[0], s[0], d[0]), *same_padding(width, k[1], s[1], d[1]))
            symmetric = symmetric_form(conv.weight, padding, d)
            if symmetric is None:  # not met by MobileNet's layers: a fixed pad op, then the convolution
                plain = nn.Conv2d(conv.in_channels, conv.out_channels, k, s, dilation=d, groups=conv.groups)
                plain.load_state_dict(conv.state_dict(), strict=False)
                top, bottom, left, right = padding
                module.conv = nn.Sequential(nn.ZeroPad2d((left, right, top, bottom)), plain)  # type: ignore[assignment]
                continue
            weight, pad = symmetric
            plain = nn.Conv2d(
                conv.in_channels,
                conv.out_channels,
                (weight.shape[-2], weight.shape[-1]),
                s,
                pad,
                d,
                conv.groups,
                conv.bias is not None,
            )
            plain.weight.copy_(weight)
            if conv.bias is not None and plain.bias is not None:
                plain.bias.copy_(conv.bias)
            module.conv = plain
    return model


def optimize_for_inference(model: nn.Module, *, channels_last: bool = True, compile: bool = False) -> nn.Module:
    """A BN-folded, channels_last (and optionally compiled) copy of `model` for inference; `model` is untouched."""
    fast = copy.deepcopy(model).eval()
    for module in fast.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fold_batchnorm(module.conv, module.bn)
            module.bn = nn.Identity()
        if isinstance(module, ConvBNAct):
            module.conv = plain_conv(module.conv)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    for p in fast.parameters():
        p.requires_grad_(False)
    if compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # constant-fold the weights into the compiled graph
        return torch.compile(fast)  # type: ignore[return-value]  # a callable wrapping the module
    return fast
