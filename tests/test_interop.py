"""torchvision / timm layouts: the real libraries' key/shape lists and logits (recorded in
`references/layouts/` by `python -m references.make_layouts`), and state_dicts built in the test by reference
models laid out like theirs."""

import pytest
import torch

from mobilenet import create_model, load_timm_mobilenetv1, load_torchvision_mobilenet_v2
from references import layouts
from references.models import TimmStyleMobileNetV1, TorchvisionStyleMobileNetV2


def _randomise_bn(model: torch.nn.Module) -> None:
    # Non-trivial running statistics, so a mis-mapped BN buffer shows in the outputs.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


@pytest.mark.parametrize("name", list(layouts.MODELS))
def test_our_models_load_the_real_libraries_weights_and_give_their_logits(name):
    recorded = layouts.read(name)
    state = layouts.seeded_state(recorded["layout"])
    if name.startswith("torchvision"):
        width = float(name.rsplit("_", 1)[1])
        ours = load_torchvision_mobilenet_v2(create_model("v2", width_mult=width, num_classes=1000), state)
        reference = TorchvisionStyleMobileNetV2(num_classes=1000, width_mult=width)
    else:
        ours = load_timm_mobilenetv1(create_model("v1", num_classes=1000), state)
        reference = TimmStyleMobileNetV1(num_classes=1000)
    # The reference models of references/models.py have the real layout, key for key and shape for shape.
    assert [[k, list(v.shape)] for k, v in reference.state_dict().items()] == [row[:2] for row in recorded["layout"]]
    with torch.no_grad():
        logits = ours.eval()(layouts.seeded_input(recorded["resolution"]))
    expected = torch.tensor(recorded["logits"])
    assert logits.argmax(1).tolist() == expected.argmax(1).tolist()
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_torchvision_mobilenet_v2_layout(width):
    reference = TorchvisionStyleMobileNetV2(num_classes=1000, width_mult=width)
    _randomise_bn(reference)
    state = reference.state_dict()
    assert len(state) == 314
    assert {"features.0.0.weight", "features.1.conv.0.0.weight", "features.1.conv.2.running_var"} <= set(state)
    assert {"features.2.conv.3.num_batches_tracked", "features.18.1.bias", "classifier.1.weight"} <= set(state)
    ours = load_torchvision_mobilenet_v2(create_model("v2", width_mult=width, num_classes=1000), state)
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), rtol=0, atol=1e-5)


def test_timm_mobilenetv1_layout():
    reference = TimmStyleMobileNetV1(num_classes=1000)
    _randomise_bn(reference)
    state = reference.state_dict()
    assert {"conv_stem.weight", "bn1.running_mean", "blocks.0.0.conv_dw.weight", "blocks.3.5.bn2.bias"} <= set(state)
    assert {"blocks.4.1.conv_pw.weight", "classifier.weight"} <= set(state)
    ours = load_timm_mobilenetv1(create_model("v1", num_classes=1000), state)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), rtol=0, atol=1e-5)


def test_interop_errors_name_key_and_shapes():
    state = TorchvisionStyleMobileNetV2(num_classes=1000).state_dict()
    with pytest.raises(ValueError, match=r"classifier\.1\.weight.*\(1000, 1280\).*\(200, 1280\)"):
        load_torchvision_mobilenet_v2(create_model("v2", num_classes=200), state)
    missing = dict(state)
    del missing["features.5.conv.1.1.running_mean"]
    with pytest.raises(KeyError, match="features.5.conv.1.1.running_mean"):
        load_torchvision_mobilenet_v2(create_model("v2", num_classes=1000), missing)
    extra = dict(state, **{"features.19.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="features.19.weight"):
        load_torchvision_mobilenet_v2(create_model("v2", num_classes=1000), extra)
