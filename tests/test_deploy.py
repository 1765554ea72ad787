"""Deployment: untrusted image decoding, export to ONNX / ExecuTorch checked against PyTorch, int8, predict.py."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import export
import predict
from data.cub import CUB200
from deploy.export import ExportMismatch, run_executorch
from deploy.images import IMAGE_SUFFIXES, ImageRejected, decode_image
from deploy.predictor import METADATA_KEY, Predictor
from mobilenet import load_checkpoint
from mobilenet.tta import Inference
from tests.conftest import (
    CUB20,
    WEIGHTS,
    jpeg_bytes,
    noisy_jpeg,
    png_header_only,
    requires_cub20,
    requires_deploy,
    requires_weights,
)

PHOTOS = ["parrot.jpg", "grace_hopper.bmp", "hot_dog.jpg"]


def test_decode_image_accepts_every_mode_as_rgb():
    for mode, colour in [("RGB", (1, 2, 3)), ("L", 128), ("CMYK", (0, 0, 0, 0)), ("RGBA", (0, 0, 255, 0)), ("P", 3)]:
        img = decode_image(jpeg_bytes(mode=mode, colour=colour), name=f"{mode}.img")
        assert img.mode == "RGB" and img.size == (64, 48)
    # A transparent pixel goes on white, as in the dataset loader.
    assert decode_image(jpeg_bytes(mode="RGBA", colour=(0, 0, 255, 0))).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"", 400, "empty"),
        (b"%PDF-1.7 this is not a picture at all", 415, "not an image"),
        (noisy_jpeg()[:20_000], 400, "cannot decode"),
        (png_header_only(30_000, 30_000), 413, "pixel limit"),
    ],
    ids=["empty", "not-an-image", "truncated", "decompression-bomb"],
)
def test_decode_image_rejects_bad_input_with_a_status(data, status, words):
    with pytest.raises(ImageRejected, match=words) as caught:
        decode_image(data, name="upload.bin")
    assert caught.value.status == status and "upload.bin" in str(caught.value)


def test_decode_image_byte_limit():
    data = jpeg_bytes((256, 256))
    assert decode_image(data, max_bytes=len(data)).size == (256, 256)
    with pytest.raises(ImageRejected, match="byte limit") as caught:
        decode_image(data, max_bytes=len(data) - 1)
    assert caught.value.status == 413


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


def real_images() -> list:
    """Natural photos when ../shared is here (the three test photos and cub20 birds), else generated birds."""
    paths = [WEIGHTS / p for p in PHOTOS if WEIGHTS and (WEIGHTS / p).is_file()]
    if CUB20 and (CUB20 / "images").is_dir():
        paths += sorted((CUB20 / "images").rglob("*.jpg"))[::120]
    return paths


def verify_args(tiny_synthetic_root) -> list[str]:
    paths = real_images()
    return ["--images", *map(str, paths)] if paths else ["--images", str(tiny_synthetic_root / "images")]


@requires_deploy
def test_onnx_export_matches_pytorch_and_carries_metadata(checkpoint, tmp_path, tiny_synthetic_root):
    out = tmp_path / "model.onnx"
    report = export.main(
        ["--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out), *verify_args(tiny_synthetic_root)]
    )
    assert report["max_abs_difference"] <= 1e-4 and report["same_top1"] == 1.0 and report["images"] >= 3
    import onnx

    proto = onnx.load(str(out))
    metadata = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    # The file carries the checkpoint's card, whole (and the same JSON beside it).
    assert metadata == sidecar and metadata["card"] == torch.load(checkpoint, weights_only=True)["card"]
    assert proto.opset_import[0].version >= 18
    # The exported graph is the BN-folded one, with a dynamic batch dimension.
    assert not any(node.op_type == "BatchNormalization" for node in proto.graph.node)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    # The same predictions from the ONNX file (onnxruntime) as from the checkpoint (PyTorch), batch of 5.
    images = [Image.open(p).convert("RGB") for p in (real_images() or sorted(tiny_synthetic_root.rglob("*.jpg")))[:5]]
    from_onnx, from_checkpoint = Predictor.load(out), Predictor.load(checkpoint)
    np.testing.assert_allclose(from_onnx.logits(images), from_checkpoint.logits(images), atol=1e-4)
    assert [t["label"] for t in from_onnx.predict(images, k=3)[0]["top"]] == [
        t["label"] for t in from_checkpoint.predict(images, k=3)[0]["top"]
    ]


@requires_deploy
def test_executorch_export_runs_in_the_executorch_runtime(checkpoint, tmp_path, tiny_synthetic_root):
    out = tmp_path / "model.pte"
    report = export.main(
        [
            "--checkpoint",
            str(checkpoint),
            "--format",
            "executorch",
            "--out",
            str(out),
            *verify_args(tiny_synthetic_root),
        ]
    )
    assert report["max_abs_difference"] <= 1e-4 and report["same_top1"] == 1.0
    assert (
        json.loads((tmp_path / "model.pte.json").read_text())["card"]
        == torch.load(checkpoint, weights_only=True)["card"]
    )
    # Independently of export.py's own check: run the file again and compare with the eval-mode model.
    from mobilenet import load_checkpoint

    model, _, _ = load_checkpoint(checkpoint)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(run_executorch(out, x.numpy()), expected, atol=1e-4)
    assert b"XnnpackBackend" in out.read_bytes()  # delegated to XNNPACK, the phones' CPU backend


@requires_deploy
def test_export_refuses_a_mismatch_and_leaves_no_file(checkpoint, tmp_path, tiny_synthetic_root):
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportMismatch, match="differs from PyTorch"):
        export.main(
            ["--checkpoint", str(checkpoint), "--out", str(out), "--tolerance", "0", *verify_args(tiny_synthetic_root)]
        )
    assert list(tmp_path.iterdir()) == []


def test_predict_text_json_and_directories(checkpoint, tmp_path, tiny_synthetic_root, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    first, second = sorted(tiny_synthetic_root.rglob("*.jpg"))[:2]
    (folder / "a.jpg").write_bytes(first.read_bytes())
    (folder / "b.png").write_bytes(b"not an image")
    results = predict.main([str(second), str(folder), "--checkpoint", str(checkpoint), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(results))
    assert [r["image"] for r in results] == [str(second), str(folder / "a.jpg"), str(folder / "b.png")]
    for r in results[:2]:
        probabilities = [t["probability"] for t in r["top"]]
        assert len(r["top"]) == 4 and probabilities == sorted(probabilities, reverse=True)  # 4 classes: top-5 is 4
        assert abs(sum(probabilities) - 1) < 1e-6
    assert "not an image" in results[2]["error"]
    predict.main([str(second), "--checkpoint", str(checkpoint), "--top-k", "2"])
    lines = capsys.readouterr().out.splitlines()
    # the image, the answer (the generated birds have no taxonomy and the run no fallback: the species), its
    # look-alike (from the run's validation photos), the top 2
    assert lines[0] == str(second) and len(lines) == 5 and lines[1].startswith("  answer: ")
    assert lines[2] == f"  often confused with: {results[0]['lookalike']}"
    assert lines[3].strip().endswith(results[0]["top"][0]["label"]) and results[0]["answer"]["level"] == "species"
    assert results[0]["bird"] is None and results[0]["no_bird_probability"] is None  # no gate: not a bird file


@requires_deploy
def test_int8_quantization_keeps_a_trained_model_s_predictions(checkpoint, tiny_synthetic_root):
    from deploy.quantize import quantize_int8, sample_tensors
    from mobilenet import load_checkpoint

    model, card, _ = load_checkpoint(checkpoint)
    view = card.transform()
    train_x, _ = sample_tensors(CUB200(tiny_synthetic_root, "train", view))
    test_x, _ = sample_tensors(CUB200(tiny_synthetic_root, "test", view))
    int8 = quantize_int8(model, list(train_x.split(6)))
    targets = [str(n.target) for n in int8.graph.nodes if n.op == "call_function"]
    # Every convolution (52 in V2) and the classifier has int8 per-channel weights.
    assert targets.count("aten.conv2d.default") == 52
    assert targets.count("quantized_decomposed.dequantize_per_channel.default") == 52 + 1
    with torch.no_grad():
        fp32, quantized = model(test_x), int8(test_x)
    correlation = np.corrcoef(fp32.flatten().numpy(), quantized.flatten().numpy())[0, 1]
    assert correlation > 0.99, correlation


@requires_weights
@requires_cub20
@requires_deploy
def test_int8_google_v1_keeps_confident_predictions_on_real_birds():
    # A real ImageNet model on real photos: where fp32 is confident (probability >= 0.5), int8 (calibrated on
    # 64 cub20 training images) keeps its top-1 on at least 95% of the photos (measured: 56 of 57). Birds
    # are outside most of ImageNet's classes, so the other predictions have small margins and flip more.
    from deploy.quantize import quantize_int8, sample_tensors
    from mobilenet.tflite import load_tflite

    model, card = load_tflite(WEIGHTS / "mobilenet_v1_0.75_192_quant.tflite")
    view = card.transform()
    train_x, _ = sample_tensors(CUB200(CUB20, "train", view), 64)
    test_x, _ = sample_tensors(CUB200(CUB20, "test", view), 100)
    int8 = quantize_int8(model, list(train_x.split(32)))
    with torch.no_grad():
        probabilities, quantized = model(test_x).softmax(1), int8(test_x)
    confident = probabilities.max(1).values >= 0.5
    agreement = (probabilities.argmax(1) == quantized.argmax(1))[confident].double().mean().item()
    print(f"int8 keeps fp32's top-1 on {agreement:.3f} of {int(confident.sum())} confident cub20 photos")
    assert confident.sum() >= 30 and agreement >= 0.95


@requires_weights
@requires_deploy
def test_int8_quantizes_every_convolution_of_a_tensorflow_padded_model():
    # Google's files use TensorFlow "SAME" padding; baked in, all 52 convolutions of V2 are quantized.
    from deploy.quantize import quantize_int8
    from mobilenet.tflite import load_tflite

    model, _ = load_tflite(WEIGHTS / "mobilenet_v2_1.0_224_quant.tflite")
    int8 = quantize_int8(model, [torch.randn(2, 3, 224, 224)])
    targets = [str(n.target) for n in int8.graph.nodes if n.op == "call_function"]
    assert targets.count("quantized_decomposed.dequantize_per_channel.default") == 52 + 1


def test_a_dataset_folder_of_class_folders_is_searched_with_its_sub_folders(checkpoint, tiny_synthetic_root, capsys):
    # The fresh-clone case: CUB's images/ holds one folder per class and the photos sit inside them.
    images = tiny_synthetic_root / "images"
    on_disk = sorted(p for p in images.rglob("*") if p.is_file())
    results = predict.main([str(images), "--checkpoint", str(checkpoint), "--json"])
    capsys.readouterr()
    assert [r["image"] for r in results] == [str(p) for p in on_disk] and len(on_disk) == 24
    assert all("top" in r for r in results)


def test_find_images_reports_what_it_skips_and_why(tmp_path):
    from deploy.images import NoImagesFound, find_images

    (tmp_path / "empty").mkdir()
    (tmp_path / "birds" / "001.Gull").mkdir(parents=True)
    (tmp_path / "birds" / "001.Gull" / "a.JPG").write_bytes(jpeg_bytes())
    (tmp_path / "birds" / "notes.txt").write_text("not a photo")
    (tmp_path / "birds" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    os.mkfifo(tmp_path / "birds" / "pipe.png")
    files, skipped = find_images([tmp_path / "birds", tmp_path / "empty", tmp_path / "nowhere.jpg"])
    assert files == [tmp_path / "birds" / "001.Gull" / "a.JPG"]
    reasons = {path.name: reason for path, reason in skipped}
    assert reasons == {
        "gone.jpg": "a dangling link",
        "pipe.png": "not a regular file",
        "empty": f"no image files ({', '.join(IMAGE_SUFFIXES)}) in it or its sub-folders",
        "nowhere.jpg": "no such file or directory",
    }
    with pytest.raises(NoImagesFound):
        find_images([])


@requires_deploy
def test_export_says_when_a_folder_holds_no_images(checkpoint, tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match=r"no readable images to verify on in .*photos"):
        export.main(
            ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx"), "--images", str(tmp_path / "photos")]
        )
    assert not (tmp_path / "m.onnx").exists()


def with_test_time(checkpoint, tmp_path, *, test_scale: float, test_hflip: bool, look_twice: bool) -> str:
    """A copy of `checkpoint` whose run recorded other test-time settings, as train.py records them."""
    state = torch.load(checkpoint, weights_only=True)
    state["config"] = dict(state["config"], test_scale=test_scale)
    resolution = round(state["card"]["resolution"] * test_scale)
    state["card"]["inference"] = {"resolution": resolution, "hflip": test_hflip, "look_twice": look_twice}
    path = tmp_path / "look-twice.pt"
    torch.save(state, path)
    return str(path)


@requires_deploy
def test_the_run_s_test_time_inference_is_what_predict_evaluate_and_export_run(
    checkpoint, tmp_path, tiny_synthetic_root
):
    import evaluate

    looking = with_test_time(checkpoint, tmp_path, test_scale=1.25, test_hflip=True, look_twice=True)
    # evaluate.py applies the recorded inference by default; the same flags on the plain run give the same logits.
    common = ["--split", "test", "--no-plots", "--latency-rounds", "1", "--workers", "0"]
    recorded = evaluate.main(["--checkpoint", looking, "--out", str(tmp_path / "a"), *common])
    explicit = evaluate.main(
        ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "b"), *common]
        + ["--test-resolution", "80", "--test-hflip", "--look-twice"]
    )
    plain = evaluate.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "c"), *common])
    assert recorded["inference"] == "centre view at 80px, flip-averaged, look-twice" == explicit["inference"]
    assert recorded["nll"] == explicit["nll"] and recorded["nll"] != plain["nll"]
    assert recorded["macs"] > 4 * plain["macs"]  # four passes at 80 px instead of one at 64 px
    # predict.py (through Predictor) runs that inference at 80 px, and so does the exported ONNX file.
    from_checkpoint = Predictor.load(looking)
    assert from_checkpoint.card.inference == Inference(80, hflip=True, look_twice=True)
    out = tmp_path / "looking.onnx"
    report = export.main(
        ["--checkpoint", looking, "--format", "onnx", "--out", str(out), *verify_args(tiny_synthetic_root)]
    )
    assert report["max_abs_difference"] <= 1e-4 and report["same_top1"] == 1.0
    images = [Image.open(p).convert("RGB") for p in sorted(tiny_synthetic_root.rglob("*.jpg"))[:5]]
    from_onnx = Predictor.load(out)
    np.testing.assert_allclose(from_onnx.logits(images), from_checkpoint.logits(images), atol=1e-4)
    import onnx

    convolutions = sum(isinstance(m, torch.nn.Conv2d) for m in load_checkpoint(checkpoint)[0].modules())
    graph = onnx.load(str(out)).graph
    assert sum(node.op_type == "Conv" for node in graph.node) == 4 * convolutions  # four passes in the file
