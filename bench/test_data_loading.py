"""Images per second delivered as normalized training tensors, one process: JPEG decoding versus the packed
cache. The cache must be at least 4x faster (a ratio within one run). Uses the real CUB images in ../shared
when present, else the generated set."""

import time

import pytest
import torch

from data.cub import CUB200
from data.prepare import packed_dataset
from data.shared import shared_path
from data.transforms import train_transform
from mobilenet.common import IMAGENET_MEAN, IMAGENET_STD

SHARED_CUB = shared_path("data", "cub20", "CUB_200_2011")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    if SHARED_CUB and (SHARED_CUB / "images.txt").exists():
        return SHARED_CUB
    from data.synthetic import generate

    return generate(tmp_path_factory.mktemp("gen"), image_size=256)


def images_per_second(dataset, limit: int = 300) -> float:
    torch.manual_seed(0)
    n = min(limit, len(dataset))
    start = time.perf_counter()
    for i in range(n):
        dataset[i]
    return n / (time.perf_counter() - start)


def test_cache_versus_jpeg(benchmark, record, root, tmp_path):
    transform = train_transform(224, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    jpeg = CUB200(root, "train", transform)
    cache = packed_dataset(
        CUB200(root, "train"), transform, size=256, cache_dir=tmp_path, workers=2, log=lambda _: None
    )
    jpeg_rate = images_per_second(jpeg)
    cache_rate = images_per_second(cache)
    record(
        dataset=str(root),
        resolution=224,
        batch=1,
        dtype="float32",
        layout="nchw",
        mode="data loading",
        jpeg_images_per_s=jpeg_rate,
        cache_images_per_s=cache_rate,
        speedup=cache_rate / jpeg_rate,
    )
    print(
        f"\nJPEG path {jpeg_rate:.0f} images/s, packed cache {cache_rate:.0f} images/s: {cache_rate / jpeg_rate:.1f}x ({root})"
    )
    assert cache_rate / jpeg_rate >= 4
    benchmark.pedantic(lambda: cache[0], rounds=50, iterations=1)
