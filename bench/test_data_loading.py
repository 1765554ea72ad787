"""Images per second delivered as normalized training tensors, one process: JPEG decoding versus the packed
cache, read in alternating rounds. The target (at least 4x) is a verdict in the report; the assertion is only
that the cache is not slower. Uses the real CUB images in ../shared
when present, else the generated set."""

import pytest
import torch

from bench.conftest import verdict
from data.cub import CUB200
from data.prepare import packed_dataset
from data.shared import shared_path
from data.transforms import train_transform
from evaluation.timing import interleaved
from mobilenet.common import IMAGENET_MEAN, IMAGENET_STD

SHARED_CUB = shared_path("data", "cub20", "CUB_200_2011")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    if SHARED_CUB and (SHARED_CUB / "images.txt").exists():
        return SHARED_CUB
    from data.synthetic import generate

    return generate(tmp_path_factory.mktemp("gen"), image_size=256)


def test_cache_versus_jpeg(benchmark, record, root, tmp_path):
    transform = train_transform(
        224, mean=IMAGENET_MEAN, std=IMAGENET_STD, scale=(0.35, 1.0), hflip=0.5, color_jitter=0.0
    )
    jpeg = CUB200(root, "train", transform)
    cache = packed_dataset(
        CUB200(root, "train"), transform, size=256, cache_dir=tmp_path, workers=2, log=lambda _: None
    )
    count = min(40, len(jpeg))

    def read(dataset) -> None:
        for i in range(count):
            dataset[i]

    torch.manual_seed(0)
    t = interleaved({"jpeg": lambda: read(jpeg), "cache": lambda: read(cache)}, rounds=5)
    jpeg_rate, cache_rate = count / t["jpeg"].median, count / t["cache"].median
    speedup = cache_rate / jpeg_rate
    record(
        dataset=root.name if SHARED_CUB is None else "cub20",
        resolution=224,
        batch=1,
        dtype="float32",
        layout="nchw",
        mode="data loading",
        jpeg_images_per_s=jpeg_rate,
        cache_images_per_s=cache_rate,
        jpeg_spread=t["jpeg"].spread,
        cache_spread=t["cache"].spread,
        speedup=speedup,
        verdicts=[verdict("packed cache / JPEG decoding", 4.0, speedup, max(t["jpeg"].spread, t["cache"].spread))],
    )
    print(f"\nJPEG path {jpeg_rate:.0f} images/s, packed cache {cache_rate:.0f} images/s: {speedup:.1f}x")
    assert speedup >= 1.0, "gross regression: reading the packed cache is slower than decoding JPEGs"
    benchmark.pedantic(lambda: cache[0], rounds=50, iterations=1)
