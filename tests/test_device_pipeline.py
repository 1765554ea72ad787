"""The device pipeline (`train.py --cache --device-pipeline`, training/device_pipeline.py), on CPU: its crops are
the loader transform's for the same seeds, its resize weights torch's, and a resumed run is bit-identical."""

import pytest
import torch
import torch.nn.functional as F

import train
from cli import UsageError
from data.cub import CUB200
from data.loaders import SeededSampler
from data.prepare import packed_dataset
from data.transforms import train_transform
from mobilenet.common import IMAGENET_MEAN, IMAGENET_STD
from tests.conftest import tiny_train_args
from training.device_pipeline import DeviceBatches, resize_weights


@pytest.mark.parametrize("source, out", [(37, 16), (16, 40), (50, 50), (9, 64)])
def test_resize_weights_are_torch_s_antialiased_bilinear(source, out):
    line = torch.rand(1, 3, 1, 70)
    start, length = torch.tensor([5]), torch.tensor([source])
    weights = resize_weights(start, length, 70, out)  # (1, out, 70)
    ours = line[0, :, 0] @ weights[0].T  # (3, out)
    crop = line[..., 5 : 5 + source]
    reference = F.interpolate(crop, size=(1, out), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(ours, reference[0, :, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batched", [True, False])
def test_device_batches_are_the_loader_transform_s_crops_for_the_same_seeds(non_square_root, tmp_path, batched):
    transform = train_transform(
        40, mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=(0.35, 1.0), hflip=0.5, color_jitter=0.0
    )
    packed = packed_dataset(CUB200(non_square_root, "train"), transform, size=48, cache_dir=tmp_path, workers=0)
    sampler = SeededSampler(len(packed), seed=3)
    batches = DeviceBatches(
        packed, transform, sampler, batch_size=5, drop_last=False, device=torch.device("cpu"), batched=batched
    )
    pairs = list(sampler)
    images, labels = batches.batch(pairs[:8])
    reference = []
    for index, seed in pairs[:8]:
        torch.manual_seed(seed)
        reference.append(packed[index][0])  # the loader's path: the same transform under the same seed
    reference = torch.stack(reference)
    one_level = 1 / 255 / min(IMAGENET_STD)  # a pixel value rounded the other way
    assert (images - reference).abs().max() <= one_level * 1.01
    assert ((images - reference).abs() > 1e-4).float().mean() < (0.01 if batched else 1e-9)  # per crop: exact
    assert labels.tolist() == [packed.labels[i] for i, _ in pairs[:8]]
    assert len(batches) == -(-len(packed) // 5) and sum(len(x) for x, _ in batches) == len(packed)


def test_a_run_with_the_device_pipeline_resumes_bit_identical(tiny_synthetic_root, tmp_path):
    common = ["--epochs", "2", "--cache", "--device-pipeline", "--classes", "1-3"]
    straight = train.main(tiny_train_args(tiny_synthetic_root, tmp_path / "a", *common))
    interrupted = tiny_train_args(tiny_synthetic_root, tmp_path / "c", *common)
    with pytest.raises(_Stop):  # stopped after its first epoch (last.pt written)
        train.main(interrupted, on_epoch=_stop_after_one)
    resumed = train.main([*interrupted, "--resume"])
    assert resumed["train_loss"] == straight["train_loss"] and resumed["test_top1"] == straight["test_top1"]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    c = torch.load(tmp_path / "c" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], c[k]) for k in a)


class _Stop(Exception):
    pass


def _stop_after_one(rows):
    if len(rows) == 1:
        raise _Stop


def test_device_pipeline_refuses_what_it_cannot_do(tiny_synthetic_root, tmp_path):
    with pytest.raises(UsageError, match="--device-pipeline needs --cache"):
        train.main(tiny_train_args(tiny_synthetic_root, tmp_path / "r", "--device-pipeline"))
    with pytest.raises(UsageError, match="--color-jitter"):
        train.main(
            tiny_train_args(
                tiny_synthetic_root, tmp_path / "r", "--cache", "--device-pipeline", "--color-jitter", "0.2"
            )
        )
