"""The packed cache: same pixels as the JPEG path, rebuilt when its source changes, memory-mapped."""

import json
import os

import numpy as np
import pytest
import torch

from data.cub import CUB200
from data.prepare import PackedDataset, channel_stats, packed_dataset
from data.transforms import center_crop, eval_transform, resize_shorter
from mobilenet.common import IMAGENET_MEAN, IMAGENET_STD


def test_cache_holds_the_resized_centre_of_each_image(tiny_synthetic_root, tmp_path):
    dataset = CUB200(tiny_synthetic_root, "train")
    packed = packed_dataset(dataset, size=48, cache_dir=tmp_path, workers=0, log=lambda _: None)
    assert len(packed) == len(dataset) and packed.targets == dataset.targets
    assert packed.class_names == dataset.class_names
    for i in range(len(dataset)):
        expected = center_crop(resize_shorter(dataset[i][0], 48), 48)
        assert torch.equal(packed[i][0], expected)
    # Boxes follow the resize (64 -> 48: a factor 0.75; square images need no crop offset).
    x, y, w, h = dataset.samples[0].box
    assert packed.boxes[0] == pytest.approx([x * 0.75, y * 0.75, w * 0.75, h * 0.75], abs=1e-4)


def test_eval_pipeline_same_through_cache_and_jpeg(tiny_synthetic_root, tmp_path):
    transform = eval_transform(56, mean=IMAGENET_MEAN, std=IMAGENET_STD)  # 56 / 0.875 = 64: the cache size
    jpeg = CUB200(tiny_synthetic_root, "test", transform=transform)
    packed = packed_dataset(CUB200(tiny_synthetic_root, "test"), transform, size=64, cache_dir=tmp_path, workers=0)
    for i in range(len(jpeg)):
        torch.testing.assert_close(packed[i][0], jpeg[i][0])


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
    array = np.lib.format.open_memmap(tmp_path / "train-256.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    array[:, :8] = 7
    array.flush()
    del array
    index = {"signature": {}, "class_names": ["a"], "labels": [0] * n, "boxes": [None] * n, "paths": [""] * n}
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
