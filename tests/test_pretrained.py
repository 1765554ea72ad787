"""Pretrained specs (tflite, torchvision, timm, 'imagenet') and batch-norm re-estimation."""

import urllib.error

import pytest
import torch

from mobilenet.pretrained import IMAGENET_URL, calibrate_batchnorm, load_pretrained
from mobilenet.tflite import load_tflite
from references.models import TimmStyleMobileNetV1, TorchvisionStyleMobileNetV2
from tests.conftest import WEIGHTS, requires_weights


def _folded_like_google() -> torch.nn.Module:
    """A model with identity batch norms and large per-channel kernel scales, as a folded-BN import has."""
    model = TorchvisionStyleMobileNetV2(num_classes=10, width_mult=0.35)
    from mobilenet import create_model, load_torchvision_mobilenet_v2

    ours = load_torchvision_mobilenet_v2(create_model("v2", width_mult=0.35, num_classes=10), model.state_dict())
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(torch.logspace(-1, 1, m.out_channels).view(-1, 1, 1, 1))
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.uniform_(-1, 1)
    return ours.eval()


def test_calibration_keeps_the_eval_function_and_aligns_batch_statistics():
    # In float64 the re-parametrisation is exact up to rounding: any formula error would show.
    model = _folded_like_google().double()
    images = torch.randn(48, 3, 96, 96, dtype=torch.float64)
    reference_state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(images)
        model.train()
        model.dropout.eval()
        uncalibrated_train_mode = model(images)  # batch statistics rescale every channel
        model.load_state_dict(reference_state)
        model.eval()
    assert (uncalibrated_train_mode - before).abs().max() / before.abs().max() > 0.1
    used = calibrate_batchnorm(model, images.split(16), num_batches=3)
    assert used == 48
    with torch.no_grad():
        after = model.eval()(images)
        torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9)
        # In train mode batch norm now normalises by statistics close to the running ones: same function.
        model.train()
        model.dropout.eval()  # only batch norm should behave differently
        train_mode = model(images)
    assert (train_mode - before).abs().max() / before.abs().max() < 1e-6


@requires_weights
def test_calibration_on_a_google_checkpoint_is_function_preserving():
    model, _ = load_tflite(WEIGHTS / "mobilenet_v1_0.25_128_quant.tflite")
    images = torch.rand(16, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        before = model(images)
    calibrate_batchnorm(model, [images])
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), before, rtol=1e-4, atol=2e-4)


def test_torchvision_and_timm_files(tmp_path):
    from safetensors.torch import save_file

    tv = TorchvisionStyleMobileNetV2(num_classes=1000, width_mult=0.5).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model, _ = load_pretrained(tmp_path / "tv.pth")
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), rtol=0, atol=1e-5)
    assert model.config["width_mult"] == 0.5
    timm = TimmStyleMobileNetV1(num_classes=1000).eval()
    save_file({k: v.contiguous() for k, v in timm.state_dict().items()}, str(tmp_path / "timm.safetensors"))
    model, _ = load_pretrained(tmp_path / "timm.safetensors", num_classes=20)
    assert model.config["arch"] == "v1" and model.classifier.out_features == 20
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(x).mean((2, 3)),
            timm.blocks(torch.clamp(timm.bn1(timm.conv_stem(x)), 0, 6)).mean((2, 3)),
            rtol=0,
            atol=1e-5,
        )


def test_foreign_and_missing_files(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="neither torchvision"):
        load_pretrained(tmp_path / "resnet.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pth: not a readable"):
        load_pretrained(tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_pretrained(tmp_path / "nothing.pth")


def test_imagenet_offline_names_url_and_local_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as error:
        load_pretrained("imagenet", num_classes=20)
    message = str(error.value)
    assert IMAGENET_URL in message and str(tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth") in message


def test_imagenet_uses_the_file_once_it_is_there(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("must not download"))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(TorchvisionStyleMobileNetV2().state_dict(), checkpoints / "mobilenet_v2-b0353104.pth")
    model, _ = load_pretrained("imagenet", num_classes=20)
    assert model.config["arch"] == "v2" and model.classifier.out_features == 20
