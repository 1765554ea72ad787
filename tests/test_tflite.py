"""Google's .tflite checkpoints: our import against the LiteRT interpreter and an independent float executor."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.cub import CUB200, load_rgb, pil_to_tensor
from mobilenet.preprocess import ResizeCenterCrop
from mobilenet.tflite import TFLiteImportError, load_tflite
from references.tflite_executor import run_reference
from tests.conftest import CUB20, WEIGHTS, requires_cub20, requires_weights

MODEL_FILES = [
    "mobilenet_v2_1.0_224_quant.tflite",
    "mobilenet_v1_0.25_128_quant.tflite",
    "mobilenet_v1_0.5_160_quant.tflite",
    "mobilenet_v1_0.75_192_quant.tflite",
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite",
]
PHOTOS = {"parrot.jpg": "macaw", "grace_hopper.bmp": "military uniform", "hot_dog.jpg": "hotdog"}
EXPECTED = {  # what each file is, as published
    "mobilenet_v2_1.0_224_quant.tflite": ("v2", 1.0, 224, 1000),
    "mobilenet_v1_0.25_128_quant.tflite": ("v1", 0.25, 128, 1000),
    "mobilenet_v1_0.5_160_quant.tflite": ("v1", 0.5, 160, 1000),
    "mobilenet_v1_0.75_192_quant.tflite": ("v1", 0.75, 192, 1000),
    "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite": ("v1", 1.0, 224, 0),
}


def interpreter(path: Path):
    litert = pytest.importorskip("ai_edge_litert.interpreter", reason="LiteRT (ai-edge-litert) is not installed")
    it = litert.Interpreter(model_path=str(path))
    it.allocate_tensors()
    return it


def run_interpreter(it, pixels: np.ndarray) -> np.ndarray:
    """Dequantized output of the interpreter for one uint8 HWC image."""
    it.set_tensor(it.get_input_details()[0]["index"], pixels[None])
    it.invoke()
    detail = it.get_output_details()[0]
    scale, zero_point = detail["quantization"]
    out = it.get_tensor(detail["index"]).astype(np.float64).reshape(-1)
    return (out - zero_point) * scale if scale else out


def photo_pixels(name: str, resolution: int) -> np.ndarray:
    """A shared photo, preprocessed by our eval transform (shorter side to res / 0.875, centre crop)."""
    image = ResizeCenterCrop(resolution)(pil_to_tensor(load_rgb(WEIGHTS / name)))
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def ours(model, card, pixels: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor(card.mean).view(1, 3, 1, 1)
    std = torch.tensor(card.std).view(1, 3, 1, 1)
    with torch.no_grad():
        return model((x - mean) / std)[0].double()


@pytest.fixture(scope="module")
def labels():
    return (WEIGHTS / "imagenet_labels.txt").read_text().splitlines()


@requires_weights
@pytest.mark.parametrize("filename", MODEL_FILES)
def test_import_works_out_architecture_from_the_graph(filename):
    arch, width, resolution, classes = EXPECTED[filename]
    model, card = load_tflite(WEIGHTS / filename)
    assert (model.config["arch"], model.config["width_mult"], card.resolution) == (
        arch,
        width,
        resolution,
    )
    assert model.config["num_classes"] == classes and model.config["padding"] == "tf_same"
    # The file's input quantization (scale 1/128, zero point 128) is our normalization: (p - 128) / 128.
    assert card.mean == pytest.approx((128 / 255,) * 3)
    assert card.std == pytest.approx((128 / 255,) * 3)


@requires_weights
@pytest.mark.parametrize("filename", MODEL_FILES)
def test_against_litert_interpreter_and_float_reference(filename):
    model, card = load_tflite(WEIGHTS / filename, keep_background=True)
    it = interpreter(WEIGHTS / filename)
    resolution = card.resolution
    for photo in PHOTOS:
        pixels = photo_pixels(photo, resolution)
        logits = ours(model, card, pixels)
        # Float reference executor, written apart from the model code: same function to 1e-3.
        reference = torch.from_numpy(run_reference(WEIGHTS / filename, pixels[None])[0])
        assert (logits - reference).abs().max().item() <= 1e-3
        litert = run_interpreter(it, pixels)
        if EXPECTED[filename][3] == 0:  # the embedding extractor: compare the features themselves
            assert np.corrcoef(logits.numpy(), litert)[0, 1] >= 0.99
            continue
        probabilities = logits.softmax(0).numpy()
        assert probabilities.argmax() == litert.argmax(), f"{filename} {photo}"
        assert np.corrcoef(probabilities, litert)[0, 1] >= 0.99, f"{filename} {photo}"


@requires_weights
@pytest.mark.parametrize("filename", MODEL_FILES[:4])
def test_published_top1_labels(filename, labels):
    # As Google's/Coral's examples classify: the whole photo resized to the input size (bilinear).
    model, card = load_tflite(WEIGHTS / filename, keep_background=True)
    it = interpreter(WEIGHTS / filename)
    resolution = card.resolution
    for photo, expected in PHOTOS.items():
        pixels = np.asarray(load_rgb(WEIGHTS / photo).resize((resolution, resolution), Image.BILINEAR))
        probabilities = ours(model, card, pixels).softmax(0).numpy()
        assert probabilities.argmax() == run_interpreter(it, pixels).argmax()
        top1 = labels[int(probabilities.argmax())]
        print(f"{filename} {photo}: {top1} ({probabilities.max():.3f})")
        if filename in ("mobilenet_v2_1.0_224_quant.tflite", "mobilenet_v1_0.75_192_quant.tflite"):
            assert expected in top1


@requires_weights
def test_background_class_and_fresh_heads():
    path = WEIGHTS / "mobilenet_v1_0.25_128_quant.tflite"
    full, _ = load_tflite(path, keep_background=True)
    dropped, _ = load_tflite(path)
    assert full.classifier.out_features == 1001 and dropped.classifier.out_features == 1000
    torch.testing.assert_close(dropped.classifier.weight, full.classifier.weight[1:])
    fresh, _ = load_tflite(path, num_classes=20)
    assert fresh.classifier.out_features == 20 and fresh.config["num_classes"] == 20
    torch.testing.assert_close(fresh.features[5].conv_pw.conv.weight, full.features[5].conv_pw.conv.weight)
    backbone, _ = load_tflite(WEIGHTS / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", num_classes=7)
    assert backbone.classifier.out_features == 7


@requires_weights
def test_v1_channel_rule_loads_without_reshaping():
    # Our V1 at widths 0.75 / 0.5 / 0.25 has exactly the shapes of Google's files.
    for filename in MODEL_FILES[1:4]:
        model, card = load_tflite(WEIGHTS / filename)
        assert model.features[-1].conv_pw.conv.out_channels == int(1024 * model.config["width_mult"])


def test_not_a_mobilenet_is_refused(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(TFLiteImportError, match="bad.tflite"):
        load_tflite(bad)
    with pytest.raises(FileNotFoundError, match="nowhere.tflite"):
        load_tflite(tmp_path / "nowhere.tflite")


@requires_weights
@requires_cub20
def test_agreement_with_interpreter_on_real_cub_photos():
    filename = "mobilenet_v2_1.0_224_quant.tflite"
    model, card = load_tflite(WEIGHTS / filename, keep_background=True)
    it = interpreter(WEIGHTS / filename)
    dataset = CUB200(CUB20, "test")
    agree, correlations = 0, []
    batch, pixels_batch = [], []
    for sample in dataset.samples:
        pixels = np.asarray(load_rgb(sample.path).resize((224, 224), Image.BILINEAR))
        pixels_batch.append(pixels)
        batch.append(run_interpreter(it, np.ascontiguousarray(pixels)))
    x = torch.from_numpy(np.stack(pixels_batch)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        probabilities = torch.cat([model((chunk / 255 - 128 / 255) / (128 / 255)).softmax(1) for chunk in x.split(64)])
    for p, reference in zip(probabilities.numpy(), batch):
        agree += int(p.argmax() == reference.argmax())
        correlations.append(np.corrcoef(p, reference)[0, 1])
    rate = agree / len(dataset)
    print(f"CUB test images: top-1 agreement {rate:.4f}, median probability correlation {np.median(correlations):.5f}")
    assert len(dataset) == 515 and rate >= 0.93


@pytest.mark.parametrize("arch, width", [("v1", 0.25), ("v2", 0.35)])
def test_a_file_built_here_imports_to_what_litert_computes(tmp_path, arch, width):
    # Needs no ../shared: a fresh clone tests the importer on a small Google-layout file it writes itself.
    from references.tiny_tflite import write_mobilenet_tflite

    path = write_mobilenet_tflite(tmp_path / f"tiny_{arch}.tflite", arch, width, 64, classes=5, seed=3)
    model, card = load_tflite(path)
    assert (model.config["arch"], model.config["width_mult"], card.resolution) == (arch, width, 64)
    assert model.classifier.out_features == 5
    it = interpreter(path)
    for seed in range(3):
        x = np.random.default_rng(seed).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        litert = it.get_tensor(it.get_output_details()[0]["index"])
        with torch.no_grad():
            ours = model(torch.from_numpy(x).permute(0, 3, 1, 2)).log_softmax(1).numpy()
        np.testing.assert_allclose(ours, np.log(litert), atol=1e-4)
