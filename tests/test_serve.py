"""serve.py: the HTTP contract, bad input answered with 4xx, a concurrent load test, and the page in Chromium."""

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi", reason="the deploy stack is not installed: pip install -r requirements-deploy.txt")
pytest.importorskip("httpx", reason="httpx (a test client) is not installed: pip install -r requirements-dev.txt")

import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from deploy.predictor import Predictor  # noqa: E402
from serve import create_app  # noqa: E402
from tests.conftest import WEIGHTS, jpeg_bytes, noisy_jpeg, png_header_only, rss_mb

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def client(checkpoint):
    app = create_app(Predictor.load(checkpoint), max_bytes=200_000, max_pixels=4_000_000)
    with TestClient(app) as c:
        yield c


def test_head_requests_and_bad_parameters_keep_the_contract(client):
    assert client.head("/").status_code == 200 and client.head("/health").status_code == 200
    for value in ("abc", "1e3", "2.5"):
        response = client.post(f"/predict?k={value}", files={"file": ("b.jpg", jpeg_bytes(), "image/jpeg")})
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert isinstance(detail, str) and detail.startswith("k:") and value[:20] in detail


def test_health_page_and_prediction(client, checkpoint):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["classes"] == 4
    assert health["model"] == f"MobileNetV2 0.35/64 ({checkpoint.name})"  # the model, not the server's path
    assert health["inference"] == "centre view at 64px"  # what the run was evaluated with (mobilenet.tta)
    page = client.get("/")
    assert page.status_code == 200 and "<form" in page.text and 'name="file"' in page.text
    response = client.post("/predict?k=3", files={"file": ("bird.jpg", jpeg_bytes((120, 90)), "image/jpeg")})
    assert response.status_code == 200
    top = response.json()["top"]
    every = client.post("/predict?k=4", files={"file": ("bird.jpg", jpeg_bytes((120, 90)), "image/jpeg")}).json()["top"]
    assert abs(sum(t["probability"] for t in every) - 1) < 1e-6  # all 4 classes: a distribution
    assert top == every[:3]  # k=3 is the 3 most probable of that distribution, in order
    assert [t["probability"] for t in every] == sorted((t["probability"] for t in every), reverse=True)
    # The service answers what predict.py's Predictor answers for the same image.
    from deploy.images import decode_image

    expected = Predictor.load(checkpoint).predict([decode_image(jpeg_bytes((120, 90)))], k=3)[0]["top"]
    assert [t["label"] for t in top] == [t["label"] for t in expected]


@pytest.mark.parametrize(
    "files, status, words",
    [
        (None, 400, "field named 'file'"),
        ({"file": ("empty.jpg", b"", "image/jpeg")}, 400, "empty"),
        ({"file": ("notes.txt", b"hello, this is text", "text/plain")}, 415, "not an image"),
        ({"file": ("cut.jpg", noisy_jpeg()[:20_000], "image/jpeg")}, 400, "cannot decode"),
        ({"file": ("big.jpg", os.urandom(300_000), "image/jpeg")}, 413, "limit"),
        ({"file": ("bomb.png", png_header_only(20_000, 20_000), "image/png")}, 413, "pixel limit"),
        ({"other": ("bird.jpg", b"x", "image/jpeg")}, 400, "field named 'file'"),
    ],
    ids=["no-body", "empty", "not-an-image", "truncated", "too-many-bytes", "decompression-bomb", "wrong-field"],
)
def test_bad_input_gets_a_4xx_and_the_service_keeps_serving(client, files, status, words):
    response = client.post("/predict", files=files) if files else client.post("/predict")
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    ok = client.post("/predict", files={"file": ("bird.jpg", jpeg_bytes(), "image/jpeg")})
    assert ok.status_code == 200


def test_load_concurrent_requests_no_errors_no_memory_growth(server):
    url, pid = server
    images = [jpeg_bytes((200 + 7 * i, 150), colour=(10 * i, 90, 200 - 5 * i)) for i in range(16)]

    def one(i: int) -> int:
        with httpx.Client(timeout=60) as c:
            if i % 10 == 9:  # one request in ten is bad input, which must not disturb the rest
                return c.post(url + "/predict", files={"file": ("x.txt", b"text", "text/plain")}).status_code
            return c.post(url + "/predict", files={"file": ("b.jpg", images[i % 16], "image/jpeg")}).status_code

    with ThreadPoolExecutor(8) as pool:  # warm-up: allocator pools, thread pools
        list(pool.map(one, range(40)))
    before = rss_mb(pid)
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(300)))
    after = rss_mb(pid)
    print(f"300 requests, 16 at a time: RSS {before:.0f} -> {after:.0f} MB")
    assert statuses.count(200) == 270 and statuses.count(415) == 30
    assert after - before < 50, f"server memory grew {after - before:.0f} MB over 300 requests"
    assert httpx.get(url + "/health").json()["status"] == "ok"


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
)
def test_page_in_headless_chromium(server, tmp_path):
    from playwright.sync_api import sync_playwright

    url, _ = server
    photo = WEIGHTS / "parrot.jpg" if WEIGHTS else tmp_path / "absent.jpg"
    if not photo.is_file():  # ../shared absent: any photo-like JPEG will do for the page's behaviour
        photo = tmp_path / "bird.jpg"
        photo.write_bytes(jpeg_bytes((320, 240)))
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-quic",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(url + "/")
            assert "Which bird is this?" in page.text_content("h1")
            page.set_input_files("#file", str(photo))
            page.click("button[type=submit]")
            page.wait_for_selector("#predictions .label", timeout=30_000)
            labels = page.locator("#predictions .label").all_text_contents()
            percentages = page.locator("#predictions td:nth-child(2)").all_text_contents()
            answer = page.text_content("#answer")
            heat_width = page.eval_on_selector("#heatmap", "img => img.complete ? img.naturalWidth : 0")
            page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()
    assert len(labels) == 4 and all(labels)  # 4 classes in the test model: top-5 shows 4
    assert answer.startswith(labels[0]) and answer.endswith("%)")  # the answer at species level, with its confidence
    assert heat_width == 64  # where it looked: Grad-CAM over the 64 px view the model saw
    assert all(p.endswith("%") for p in percentages)
    assert abs(sum(float(p[:-1]) for p in percentages) - 100) < 0.5
