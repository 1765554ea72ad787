"""Shared test settings: paths to ../shared (real CUB images and Google checkpoints), skipped when absent."""

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CUB20 = SHARED / "data" / "cub20" / "CUB_200_2011"
WEIGHTS = SHARED / "weights"

requires_cub20 = pytest.mark.skipif(
    not (CUB20 / "images.txt").exists(), reason=f"real CUB images not found at {CUB20} (../shared is absent)"
)
requires_weights = pytest.mark.skipif(
    not WEIGHTS.is_dir(), reason=f"Google's MobileNet checkpoints not found at {WEIGHTS} (../shared is absent)"
)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """The built-in generated set at its default size (20 classes x 60 images, 128 px), made once per run."""
    from data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory):
    """A tiny generated set (4 classes x 6 images, 64 px) for fast plumbing tests."""
    from data.synthetic import generate

    return generate(tmp_path_factory.mktemp("tiny"), num_classes=4, images_per_class=6, image_size=64)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_synthetic_root):
    """A small trained run (V2 0.35 at 64 px, 2 epochs on the tiny generated set): weights and batch-norm
    statistics away from their initial values, for the deployment and service tests."""
    import train

    out = tmp_path_factory.mktemp("tiny-run") / "run"
    train.main(["--data-root", str(tiny_synthetic_root), "--arch", "v2", "--width", "0.35", "--resolution", "64",
                "--epochs", "2", "--batch-size", "4", "--workers", "0", "--out", str(out), "--no-progress"])  # fmt: skip
    return out / "best.pt"
