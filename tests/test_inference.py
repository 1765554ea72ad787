"""The inference fast path computes the eval-mode function (BN folding checked against the unfolded model)."""

import torch
from torch import nn

from layers import ConvBNAct
from mobilenet import create_model, optimize_for_inference
from mobilenet.inference import fold_batchnorm


def _random_statistics(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def test_fold_batchnorm_by_hand():
    conv, bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), _random_statistics(nn.BatchNorm2d(4))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fold_batchnorm(conv, bn)(x), bn(conv(x)), rtol=1e-5, atol=1e-5)


def test_fast_path_equals_eval_model_within_1e_4():
    for arch, width in (("v1", 0.5), ("v2", 1.0)):
        torch.manual_seed(0)
        model = _random_statistics(create_model(arch, width_mult=width, num_classes=200))
        fast = optimize_for_inference(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
        assert all(isinstance(m.bn, nn.Identity) for m in fast.modules() if isinstance(m, ConvBNAct))
        x = torch.randn(4, 3, 160, 160)
        with torch.no_grad():
            diff = (fast(x.contiguous(memory_format=torch.channels_last)) - model(x)).abs().max().item()
        assert diff <= 1e-4
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the input model is untouched


def test_fast_path_of_a_tensorflow_padded_model():
    # Imported Google weights use TensorFlow "SAME" padding; the fast path turns the stride-1 layers into plain
    # symmetric nn.Conv2d (what quantizers and exporters match) and keeps the asymmetric stride-2 ones.
    from layers import Conv2dSame

    model = _random_statistics(create_model("v2", width_mult=0.35, num_classes=10, padding="tf_same"))
    fast = optimize_for_inference(model, channels_last=False)
    same = [m for m in fast.modules() if isinstance(m, Conv2dSame)]
    assert len(same) == 5 and all(m.stride == (2, 2) for m in same)  # the stem and the four stride-2 blocks
    for size in (96, 97):  # even and odd inputs pad differently at stride 2
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            assert (fast(x) - model(x)).abs().max().item() <= 1e-4


def test_baked_padding_is_the_same_function_at_its_size():
    from layers import Conv2dSame
    from mobilenet.inference import bake_same_padding

    model = _random_statistics(create_model("v1", width_mult=0.25, num_classes=10, padding="tf_same"))
    baked = bake_same_padding(optimize_for_inference(model, channels_last=False), 97)
    assert not any(isinstance(m, Conv2dSame) for m in baked.modules())
    x = torch.randn(2, 3, 97, 97)
    with torch.no_grad():
        assert (baked(x) - model(x)).abs().max().item() <= 1e-4
