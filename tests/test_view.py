"""The run view: one object, read from a checkpoint, that every command takes the run's data, normalisation
and test-time inference from; and the test-time flags mean the same in train.py and evaluate.py."""

import dataclasses

import pytest
import torch

import evaluate
import train
from cli import UsageError
from data.cub import CUB200
from data.transforms import eval_transform
from mobilenet import load_checkpoint
from mobilenet.tta import Inference
from training.view import RunView


def test_the_view_of_a_checkpoint_is_the_run_s_data_normalisation_and_inference(tiny_checkpoint, tiny_synthetic_root):
    _, info = load_checkpoint(tiny_checkpoint)
    view = RunView.of_checkpoint(info)
    assert view.class_names == tuple(info["class_names"]) and view.train_resolution == 64
    assert view.inference == Inference(64) and view.data_root() == tiny_synthetic_root
    test = view.dataset("test", None)
    assert [s.path for s in test.samples] == [s.path for s in CUB200(tiny_synthetic_root, "test").samples]
    image = test[0][0]
    expected = eval_transform(64, mean=info["data_config"]["mean"], std=info["data_config"]["std"])(image)
    assert torch.equal(view.eval_transform()(image), expected)
    # A flag changes only what it names.
    flipped = view.with_inference(hflip=True)
    assert flipped.inference == Inference(64, hflip=True) and flipped.run == view.run
    assert view.with_inference(resolution=80).inference == Inference(80)


def test_the_view_names_the_flag_when_the_data_or_the_split_is_not_there(tiny_checkpoint, tmp_path):
    _, info = load_checkpoint(tiny_checkpoint)
    view = RunView.of_checkpoint(info)
    with pytest.raises(UsageError, match=f"'{tmp_path}' is not a CUB root .*: give --data-root"):
        view.data_root(tmp_path)
    moved = RunView.of_checkpoint({**info, "config": {**info["config"], "data_root": str(tmp_path / "gone")}})
    with pytest.raises(UsageError, match="the run's data root .*gone' is not here: give --images"):
        moved.data_root(flag="--images")
    assert len(view.dataset("val", None)) > 0  # the tiny run held 10% out
    refit = dataclasses.replace(view, run=dataclasses.replace(view.run, val_fraction=0.0))
    with pytest.raises(UsageError, match="--split val: the run has no validation split"):
        refit.dataset("val", None)


def test_test_time_flags_are_train_s_names_with_train_s_meaning():
    def flags(parser):
        return {s: a for a in parser._actions for s in a.option_strings}

    trained, evaluated = flags(train.get_args_parser()), flags(evaluate.get_args_parser())
    for flag in ("--test-hflip", "--no-test-hflip", "--look-twice", "--no-look-twice"):
        assert trained[flag].dest == evaluated[flag].dest  # the same option, the same record field
    # evaluate.py's size is a test resolution (train.py's --resolution is the training size): another name
    assert "--test-resolution" in evaluated and "--resolution" not in evaluated and "--hflip" not in evaluated
    assert trained["--hflip"].dest == "hflip" and "probability" in trained["--hflip"].help
