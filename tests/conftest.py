"""Shared test settings: paths into ../shared (real CUB images and Google checkpoints), skipped when absent.

`FGM_SHARED=none` hides ../shared, so the suite runs as a fresh clone sees it (`.ci/run` does both).
"""

import importlib.util
import io
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.shared import ENV_VAR, shared_path

REPO = Path(__file__).resolve().parents[1]
CUB20 = shared_path("data", "cub20", "CUB_200_2011")
WEIGHTS = shared_path("weights")
_ABSENT = f"../shared is absent or hidden ({ENV_VAR}=none)"

requires_cub20 = pytest.mark.skipif(
    CUB20 is None or not (CUB20 / "images.txt").is_file(), reason=f"real CUB images (cub20) not found: {_ABSENT}"
)
DEPLOY_STACK = ("onnx", "onnxscript", "onnxruntime", "executorch", "torchao", "fastapi", "uvicorn", "multipart")
requires_deploy = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in DEPLOY_STACK),
    reason="the deploy stack is not installed: pip install -r requirements-deploy.txt",
)
requires_weights = pytest.mark.skipif(WEIGHTS is None, reason=f"Google's MobileNet checkpoints not found: {_ABSENT}")


def jpeg_bytes(size=(64, 48), colour=(200, 30, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="JPEG" if mode in ("RGB", "L", "CMYK") else "PNG")
    return buffer.getvalue()


def noisy_jpeg(size=(400, 300), seed: int = 0) -> bytes:
    """A photo-sized JPEG of noise: its entropy-coded data is most of the file, so a cut lands in the pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with a few bytes of image data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def tiny_train_args(root: Path, out: Path, *extra: str) -> list[str]:
    """train.py arguments for a seconds-long run: V2 0.25 at 48 px, 2 epochs, batch 4, no workers."""
    fixed = "--arch v2 --width 0.25 --resolution 48 --epochs 2 --batch-size 4 --workers 0 --lr 0.05 --warmup-epochs 0.5"
    return ["--data-root", str(root), "--out", str(out), *fixed.split(), *extra]


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from torch's generator at seed 0, whatever ran before it."""
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
    train.main(
        [
            "--data-root",
            str(tiny_synthetic_root),
            "--arch",
            "v2",
            "--width",
            "0.35",
            "--resolution",
            "64",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    return out / "best.pt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve.py exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up in {seconds} s")


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    """serve.py as a user starts it, in its own process on a free loopback port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "serve.py", "--checkpoint", str(tiny_checkpoint), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
        process.stderr.close()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of process `pid` from /proc: `VmRSS` now, or `VmHWM`, its peak (reset by exec)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


@pytest.fixture(scope="session")
def non_square_root(tiny_synthetic_root, tmp_path_factory):
    """The tiny set with every photo stretched to a landscape (96 x 64) or portrait (64 x 88) shape."""
    import shutil

    from PIL import Image

    root = tmp_path_factory.mktemp("non-square") / "CUB_200_2011"
    shutil.copytree(tiny_synthetic_root, root)
    for i, path in enumerate(sorted((root / "images").rglob("*.jpg"))):
        with Image.open(path) as image:
            image.convert("RGB").resize((96, 64) if i % 2 else (64, 88)).save(path, quality=95)
    return root
