"""The packed cache: the whole photo at the cache size, so the eval view is the JPEG path's pixels and a
training crop the same region of the photo; rebuilt when its source changes; memory-mapped."""

import json
import os

import numpy as np
import pytest
import torch

from data.cub import CUB200
from data.prepare import PackedDataset, channel_stats, packed_dataset
from data.transforms import RandomResizedCrop, train_transform
from mobilenet.common import IMAGENET_MEAN, IMAGENET_STD
from mobilenet.preprocess import center_crop, eval_transform, resize_shorter


def test_cache_holds_each_whole_photo_at_the_cache_size(non_square_root, tmp_path):
    dataset = CUB200(non_square_root, "train")
    packed = packed_dataset(dataset, size=48, cache_dir=tmp_path, workers=0, log=lambda _: None)
    assert len(packed) == len(dataset) and packed.targets == dataset.targets
    assert packed.class_names == dataset.class_names
    for i in range(len(dataset)):
        photo = dataset[i][0]
        assert torch.equal(packed[i][0], resize_shorter(photo, 48))  # the whole photo, aspect kept
        assert min(packed[i][0].shape[-2:]) == 48 and packed[i][0].shape[-2:] != (48, 48)
        # Boxes follow the resize of each side.
        (height, width), (h, w) = photo.shape[-2:], packed[i][0].shape[-2:]
        x, y, bw, bh = dataset.samples[i].box
        assert packed.boxes[i] == pytest.approx([x * w / width, y * h / height, bw * w / width, bh * h / height])


@pytest.mark.parametrize("root", ["tiny_synthetic_root", "non_square_root"])
def test_eval_pipeline_same_through_cache_and_jpeg(root, tmp_path, request):
    root = request.getfixturevalue(root)
    transform = eval_transform(56, mean=IMAGENET_MEAN, std=IMAGENET_STD)  # 56 / 0.875 = 64: the cache size
    jpeg = CUB200(root, "test", transform=transform)
    packed = packed_dataset(CUB200(root, "test"), transform, size=64, cache_dir=tmp_path, workers=0)
    for i in range(len(jpeg)):
        torch.testing.assert_close(packed[i][0], jpeg[i][0])


def test_training_crops_through_cache_and_jpeg_are_the_same_region_on_non_square_photos(non_square_root, tmp_path):
    dataset = CUB200(non_square_root, "train")
    packed = packed_dataset(dataset, size=48, cache_dir=tmp_path, workers=0, log=lambda _: None)
    crop = RandomResizedCrop(40, scale=(0.35, 1.0))
    transform = train_transform(
        40, mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=(0.35, 1.0), hflip=0.5, color_jitter=0.0
    )
    from_jpeg, from_cache, from_square = [], [], []
    for i in range(len(dataset)):
        photo, cached = dataset[i][0], packed[i][0]
        (height, width), (h, w) = photo.shape[-2:], cached.shape[-2:]
        for seed in range(10):
            torch.manual_seed(seed)
            a = crop.params(height, width)
            torch.manual_seed(seed)
            b = crop.params(h, w)
            # (top, left, h, w) as fractions of the photo's sides: the same region, to a pixel of the cache
            for value_a, value_b, side_a, side_b in zip(a, b, (height, width) * 2, (h, w) * 2):
                assert abs(value_a / side_a - value_b / side_b) <= 1.01 / min(h, w)
            for images, source in ((from_jpeg, photo), (from_cache, cached), (from_square, center_crop(cached, 48))):
                torch.manual_seed(seed)
                images.append(transform(source))
    jpeg = torch.stack(from_jpeg)
    cache_gap = (torch.stack(from_cache) - jpeg).abs().mean().item()
    square_gap = (torch.stack(from_square) - jpeg).abs().mean().item()  # what the centre-square cache gave
    assert cache_gap < square_gap / 3, (cache_gap, square_gap)


def test_cache_reused_then_rebuilt_when_source_changes(tiny_synthetic_root, tmp_path):
    messages = []
    dataset = CUB200(tiny_synthetic_root, "train")
    first = packed_dataset(dataset, size=32, cache_dir=tmp_path, workers=0, log=messages.append)
    assert messages and messages[-1].startswith("building")
    mtime = first.index_path.stat().st_mtime_ns
    packed_dataset(dataset, size=32, cache_dir=tmp_path, workers=0, log=messages.append)
    assert len(messages) == 1 and first.index_path.stat().st_mtime_ns == mtime  # reused
    victim = dataset.samples[0].path
    original = victim.read_bytes()
    try:
        from PIL import Image

        Image.new("RGB", (64, 64), (255, 0, 0)).save(victim)
        rebuilt = packed_dataset(dataset, size=32, cache_dir=tmp_path, workers=0, log=messages.append)
        assert "stale" in messages[-1]
        assert rebuilt[0][0][0].float().mean() > 240  # the new red image
    finally:
        victim.write_bytes(original)
        os.utime(victim)


def test_unreadable_images_left_out_with_warning(tiny_synthetic_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_synthetic_root, root)
    dataset = CUB200(root, "train", skip_unreadable=True)
    dataset.samples[2].path.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        packed = packed_dataset(dataset, size=32, cache_dir=tmp_path / "cache", workers=0, log=lambda _: None)
    assert len(packed) == len(dataset) - 1
    assert packed.targets == [s.label for i, s in enumerate(dataset.samples) if i != 2]


def _rss_anon_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_cache_is_memory_mapped(tmp_path):
    # A 300 MB cache read end to end must not grow the process's own (anonymous) memory.
    n, size = 1600, 256
    pixels = np.memmap(tmp_path / "train-256.u8", dtype=np.uint8, mode="w+", shape=(n, size, size, 3))
    pixels[:, :8] = 7
    pixels.flush()
    del pixels
    index = {
        "signature": {},
        "class_names": ["a"],
        "labels": [0] * n,
        "offsets": [i * size * size * 3 for i in range(n)],
        "shapes": [[size, size]] * n,
        "boxes": [None] * n,
        "paths": [""] * n,
    }
    (tmp_path / "train-256.json").write_text(json.dumps(index))
    packed = PackedDataset(tmp_path / "train-256.json")
    before = _rss_anon_kb()
    total = 0
    for i in range(n):
        total += int(packed[i][0][0, 0, 0])
    assert total == 7 * n
    assert _rss_anon_kb() - before < 50_000  # kB: far below the 315 MB file


def test_channel_stats_by_hand():
    images = [torch.zeros(3, 2, 2, dtype=torch.uint8), torch.full((3, 2, 2), 255, dtype=torch.uint8)]
    mean, std = channel_stats(images)
    assert mean == pytest.approx([0.5] * 3) and std == pytest.approx([0.5] * 3)


def test_the_packed_cache_holds_the_same_images_as_the_dataset_for_every_validation_fold(tiny_synthetic_root, tmp_path):
    # Regression: the cache once rebuilt its source without the fold, so every fold trained on one split.
    for split in ("train", "val"):
        for fold in (0, 1):
            dataset = CUB200(tiny_synthetic_root, split, val_fraction=0.5, val_seed=0, val_fold=fold)
            packed = packed_dataset(dataset, size=32, cache_dir=tmp_path, workers=0, log=lambda _: None)
            assert packed.paths == [str(s.path) for s in dataset.samples]
            assert f"fold{fold}" in packed.index_path.name
