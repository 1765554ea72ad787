"""Shared test settings: paths into ../shared (real CUB images and Google checkpoints), skipped when absent.

`FGM_SHARED=none` hides ../shared, so the suite runs as a fresh clone sees it (`.ci/run` does both).
"""

from pathlib import Path

import pytest
import torch

from data.shared import ENV_VAR, shared_path

REPO = Path(__file__).resolve().parents[1]
CUB20 = shared_path("data", "cub20", "CUB_200_2011")
WEIGHTS = shared_path("weights")
_ABSENT = f"../shared is absent or hidden ({ENV_VAR}=none)"

requires_cub20 = pytest.mark.skipif(
    CUB20 is None or not (CUB20 / "images.txt").is_file(), reason=f"real CUB images (cub20) not found: {_ABSENT}"
)
requires_weights = pytest.mark.skipif(WEIGHTS is None, reason=f"Google's MobileNet checkpoints not found: {_ABSENT}")


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
