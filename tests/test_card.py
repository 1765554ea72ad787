"""The model card (`mobilenet.card`): carried by the weights, the one description every command feeds a model
by; files written before cards read through one upgrade; each fact of a checkpoint has one home."""

import dataclasses
import json

import pytest
import torch

import evaluate
import train
from cli import UsageError
from data.cub import CUB200
from deploy.predictor import card_of_metadata
from mobilenet import create_model, load_checkpoint
from mobilenet.card import ModelCard
from mobilenet.checkpoint import CheckpointError, save_checkpoint
from mobilenet.tta import Inference
from training.config import MODEL_FACTS, RunConfig


def test_a_checkpoint_s_card_reproduces_the_run_s_own_test_accuracy(tiny_checkpoint):
    """train.py measured the test split with its own loaders; the card read back from the file feeds the model
    the same pixels, so an evaluation built from the card alone gets the same figures."""
    model, card, info = load_checkpoint(tiny_checkpoint)
    assert card.resolution == 64 and card.inference == Inference(64) and len(card.class_names) == 4
    loader = torch.utils.data.DataLoader(RunConfig.of_checkpoint(info).dataset("test", card.transform()), batch_size=64)
    again = train.evaluate(card.inference.wrap(model), loader, torch.device("cpu"))
    assert again["test_top1"] == pytest.approx(info["metrics"]["test_top1"])
    assert again["test_loss"] == pytest.approx(info["metrics"]["test_loss"], rel=1e-4)


@torch.no_grad()
def test_test_time_choices_change_what_the_model_answers_as_they_say(tiny_checkpoint, tiny_synthetic_root):
    """Flip averaging is the mean of the photo's and its mirror's logits (by hand); the full view squashes the
    whole photo where the centre view crops it, so the logits differ; the test resolution is the input size."""
    _, card, _ = load_checkpoint(tiny_checkpoint)
    model = create_model("v2", width_mult=0.35, num_classes=4).eval()  # random weights: no symmetry learned
    torch.nn.init.normal_(model.classifier.weight, std=1e6)  # logits of order 1 (the initial head's are ~1e-9)
    photo = CUB200(tiny_synthetic_root, "test")[0][0]
    photo = torch.cat([photo, photo[:, :, :20]], dim=2)  # wider than tall: the views differ
    x = card.transform()(photo)[None]
    flipped = card.with_inference(hflip=True)
    assert flipped.inference.wrap(model)(x) == pytest.approx((model(x) + model(x.flip(-1))) / 2, abs=1e-5)
    assert not torch.allclose(model(x), model(x.flip(-1)), atol=1e-3)  # so the flip is not a no-op here
    full = card.transform(view="full")(photo)[None]
    assert full.shape == x.shape and not torch.allclose(model(full), model(x), atol=1e-3)
    assert card.with_inference(resolution=80).transform()(photo).shape == (3, 80, 80)
    assert card.one_pass().inference == Inference(card.resolution)


def test_a_checkpoint_keeps_each_fact_in_one_place(tiny_checkpoint):
    raw = torch.load(tiny_checkpoint, weights_only=True)
    assert raw["format_version"] == 3 and not {"data_config", "class_names"} & set(raw)
    assert not set(MODEL_FACTS) & set(raw["config"])  # the run record leaves them to model_config and card
    record = json.loads((tiny_checkpoint.parent / "config.json").read_text())
    assert not set(MODEL_FACTS) & set(record) and record["card"] == raw["card"]
    run = RunConfig.of_checkpoint(raw)
    assert (run.arch, run.width, run.resolution) == ("v2", 0.35, 64)  # put back from model_config and card


def test_files_written_before_cards_load_with_the_same_card_and_weights(tiny_checkpoint, tmp_path):
    """A format-2 checkpoint (class names, data_config and the whole run record side by side), written as the
    old writer did: the upgrade makes its card from those fields, test-time options included."""
    raw = torch.load(tiny_checkpoint, weights_only=True)
    card = raw["card"]
    old = {k: v for k, v in raw.items() if k not in ("card", "tensor_sha256")}
    full_record = dict(RunConfig.of_checkpoint(raw).to_dict(), test_scale=1.25, test_hflip=True)
    data = {"resolution": 64, "mean": card["mean"], "std": card["std"]}
    old.update(format_version=2, class_names=card["class_names"], data_config=data, config=full_record)
    save_checkpoint(old, tmp_path / "v2.pt")
    model, upgraded, info = load_checkpoint(tmp_path / "v2.pt")
    assert upgraded.class_names == tuple(card["class_names"]) and upgraded.resolution == 64
    assert upgraded.inference == Inference(80, hflip=True, look_twice=False)
    assert RunConfig.of_checkpoint(info).test_scale == 1.25
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(model(x), load_checkpoint(tiny_checkpoint)[0](x))
    broken = dict(old, data_config={"resolution": 64, "mean": [0.5] * 3})
    save_checkpoint(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"broken.pt: field card.std must be 3 numbers"):
        load_checkpoint(tmp_path / "broken.pt")


def test_onnx_metadata_before_cards_gives_the_card_the_graph_was_built_with():
    old = {
        "class_names": ["a", "b"],
        "resolution": 80,
        "training_resolution": 64,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "inference": "centre view at 80px, flip-averaged",
    }
    card = card_of_metadata(old)
    assert card == ModelCard(("a", "b"), (0.5,) * 3, (0.25,) * 3, 64, Inference(80, hflip=True))
    assert card_of_metadata({"card": card.to_dict()}) == card
    with pytest.raises(ValueError, match="field card.resolution"):
        card_of_metadata(dict(old, resolution="80", training_resolution="80"))


def test_the_run_s_data_names_the_flag_when_the_root_or_the_split_is_not_there(tiny_checkpoint, tmp_path):
    _, _, info = load_checkpoint(tiny_checkpoint)
    run = RunConfig.of_checkpoint(info)
    with pytest.raises(UsageError, match=f"'{tmp_path}' is not a CUB root .*: give --data-root"):
        run.data_root_here(tmp_path)
    moved = dataclasses.replace(run, data_root=str(tmp_path / "gone"))
    with pytest.raises(UsageError, match="the run's data root .*gone' is not here: give --images"):
        moved.data_root_here(flag="--images")
    assert len(run.dataset("val", None)) > 0  # the tiny run held 10% out
    with pytest.raises(UsageError, match="--split val: the run has no validation split"):
        dataclasses.replace(run, val_fraction=0.0).dataset("val", None)


def test_test_time_flags_are_train_s_names_with_train_s_meaning():
    def flags(parser):
        return {s: a for a in parser._actions for s in a.option_strings}

    trained, evaluated = flags(train.get_args_parser()), flags(evaluate.get_args_parser())
    for flag in ("--test-hflip", "--no-test-hflip", "--look-twice", "--no-look-twice"):
        assert trained[flag].dest == evaluated[flag].dest  # the same option, the same record field
    # evaluate.py's size is a test resolution (train.py's --resolution is the training size): another name
    assert "--test-resolution" in evaluated and "--resolution" not in evaluated and "--hflip" not in evaluated
    assert trained["--hflip"].dest == "hflip" and "probability" in trained["--hflip"].help
