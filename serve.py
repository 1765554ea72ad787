"""A small HTTP service for a trained model: `python serve.py --checkpoint runs/NAME/best.pt --port 8000`.

- `POST /predict`: an image in the multipart field `file` -> `{"bird", "no_bird_probability", "answer": {"level",
  "name", "probability"}, "top": [{"label", "index", "probability"}...], "model": ..., "milliseconds": ...}`
  (`deploy.predictor.Predictor.predict`: `bird` false when the gate finds no bird, null for a model without a
  gate; `answer` at the level the model is sure of; `lookalike`, the species the top one is most confused
  with); `?k=N` for the top N species (default 5); `?explain=true` adds `heatmap`, where the model looked
  (Grad-CAM over the view it saw, a JPEG data URL; a `.pt` or `.tflite` model only).
- `GET /health`: `{"status": "ok", "model": ..., "classes": K}`.
- `GET /`: a page where a person uploads a photo and sees "no bird found" or the answer at its level with its
  confidence, where the model looked, the look-alike, the species and confidences, and which model answered.

Bad input gets a 4xx JSON `{"detail": message}`, never a crash: an empty or missing upload (400), a
file that is not one of the accepted photo formats (415), a truncated image (400), a body over `--max-bytes`
(413, counted while it streams in, with or without Content-Length), an image over `--max-pixels` or with an
aspect ratio over 16:1 (413, from the header before decoding). At most `--max-concurrent` uploads are decoded
and classified at a time; the others wait. Answers name the model (architecture, size, file name), never the
server's paths. FastAPI + uvicorn, bound to 127.0.0.1 unless `--host` says otherwise.
"""

import argparse
import asyncio
import base64
import html
import io
import sys
import time

from cli import port, positive_int, run
from deploy.images import (
    MAX_BYTES,
    MAX_DECODE_BYTES,
    MAX_PIXELS,
    ImageRejected,
    decode_bytes,
    finish_decode,
    open_image,
)
from deploy.predictor import Predictor
from deploy.requirements import INSTALL, MissingDependency, require
from training.runtime import limit_malloc_arenas, release_memory

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.requests import ClientDisconnect
except ModuleNotFoundError as e:  # the deploy stack is optional
    message = f"serve.py needs {e.name}, not installed here: {INSTALL}"
    if __name__ == "__main__":
        sys.exit(f"serve.py: error: {message}")
    raise MissingDependency(message) from None

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Fine-grained MobileNet</title>
<style>
 body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }}
 #preview {{ max-width: 100%; max-height: 20rem; display: block; margin: 1rem 0; }}
 table {{ border-collapse: collapse; width: 100%; }} td {{ padding: .25rem .5rem; }}
 .bar {{ background: #4a7; height: .8rem; }} .error {{ color: #b00; }}
</style></head>
<body>
<h1>Which bird is this?</h1>
<p>{model} &middot; {classes} species. Choose a photo; the model answers at the level it is sure of (species,
genus, family or order), with its five best guesses.</p>
<form id="form"><input type="file" id="file" name="file" accept="image/*">
<button type="submit">Identify</button></form>
<img id="preview" alt="">
<div id="result" aria-live="polite"></div>
<script>
const form = document.getElementById("form"), input = document.getElementById("file");
const result = document.getElementById("result"), preview = document.getElementById("preview");
input.addEventListener("change", () => {{
  if (input.files[0]) preview.src = URL.createObjectURL(input.files[0]);
}});
form.addEventListener("submit", async (event) => {{
  event.preventDefault();
  if (!input.files[0]) {{ result.innerHTML = '<p class="error">Choose a photo first.</p>'; return; }}
  result.textContent = "Thinking...";
  const body = new FormData();
  body.append("file", input.files[0]);
  const response = await fetch("predict?explain={explain}", {{ method: "POST", body }});
  const data = await response.json();
  if (!response.ok) {{ result.innerHTML = ""; const p = document.createElement("p");
    p.className = "error"; p.textContent = data.detail; result.appendChild(p); return; }}
  result.innerHTML = "";
  const verdict = document.createElement("p"); verdict.id = "answer";
  if (data.bird === false) {{
    verdict.textContent = "No bird found (probability of no bird " + (100 * data.no_bird_probability).toFixed(1) + "%)";
    result.appendChild(verdict); return;
  }}
  const level = data.answer.level === "species" ? "" : data.answer.level === "bird" ? "" : data.answer.level + " ";
  verdict.textContent = level + data.answer.name + " (" + (100 * data.answer.probability).toFixed(1) + "%)";
  result.appendChild(verdict);
  if (data.lookalike) {{ const similar = document.createElement("p"); similar.id = "lookalike";
    similar.textContent = "Often confused with: " + data.lookalike; result.appendChild(similar); }}
  if (data.heatmap) {{ const heat = document.createElement("img"); heat.id = "heatmap"; heat.src = data.heatmap;
    heat.alt = "where the model looked"; heat.title = "where the model looked (Grad-CAM)"; result.appendChild(heat); }}
  const table = document.createElement("table"); table.id = "predictions";
  for (const entry of data.top) {{
    const row = table.insertRow(), name = row.insertCell(), pct = row.insertCell(), bar = row.insertCell();
    name.textContent = entry.label; name.className = "label";
    pct.textContent = (100 * entry.probability).toFixed(1) + "%";
    const fill = document.createElement("div"); fill.className = "bar";
    fill.style.width = (100 * entry.probability).toFixed(1) + "%"; bar.appendChild(fill); bar.style.width = "50%";
  }}
  result.appendChild(table);
}});
</script>
</body></html>
"""


MAX_CONCURRENT = 4  # decodes + forward passes at a time, and uploads read at a time
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the file


class MemoryBudget:
    """Bytes that decodes in flight may take together: a request waits until its image fits (one image alone
    always may), so a burst of large images is decoded in turn instead of at once."""

    def __init__(self, total: int) -> None:
        self.total, self.used = total, 0
        self.changed = asyncio.Condition()

    async def acquire(self, amount: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.used == 0 or self.used + amount <= self.total)
            self.used += amount

    async def release(self, amount: int) -> None:
        async with self.changed:
            self.used -= amount
            self.changed.notify_all()


def create_app(
    predictor: Predictor,
    *,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_concurrent: int = MAX_CONCURRENT,
) -> FastAPI:
    """The service around `predictor`; limits are per app (no global state)."""
    app = FastAPI(title="Fine-grained MobileNet", docs_url="/docs")
    working = asyncio.Semaphore(max_concurrent)
    reading = asyncio.Semaphore(max_concurrent)  # bodies held in memory at a time: the others wait, unread
    decoding = MemoryBudget(MAX_DECODE_BYTES)
    page = PAGE.format(
        model=html.escape(predictor.name),
        classes=predictor.species,
        explain="true" if predictor.explainable else "false",
    )

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, error: RequestValidationError) -> JSONResponse:
        # The documented contract is {"detail": message}; FastAPI's default is a list of error records.
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "request"
        value = str(first.get("input", ""))[:40]
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}, got {value!r}"}, status_code=422)

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.api_route("/health", methods=["GET", "HEAD"])
    def health() -> dict:
        inference = predictor.card.inference.describe()
        return {"status": "ok", "model": predictor.name, "classes": predictor.species, "inference": inference}

    async def read_upload(request: Request) -> tuple[bytes | None, str]:
        """The uploaded file's bytes and name (None if the client disconnected); 4xx for a bad body."""
        body = bytearray()
        try:
            async for chunk in request.stream():  # counted as it arrives: a chunked body has no Content-Length
                body += chunk
                if len(body) > max_bytes + FORM_OVERHEAD:
                    raise HTTPException(413, f"request body is over the {max_bytes:,}-byte limit (stopped reading)")
        except ClientDisconnect:
            return None, ""
        request._body = bytes(body)  # what request.form() parses instead of reading the stream again
        del body
        async with request.form(max_files=1, max_fields=4, max_part_size=max_bytes + 1) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(400, "no image: send the photo in a multipart form field named 'file'")
            data = await upload.read(max_bytes + 1)
            name = upload.filename or "upload"
        request._body = b""
        return data, name

    def decode_and_predict(image, name: str, k: int, explain: bool) -> dict:
        try:
            photo = finish_decode(image, name)
            answered = predictor.predict([photo], k)[0]
            if explain and predictor.explainable and answered["bird"] is not False:
                picture = predictor.explain([photo], [answered["top"][0]["index"]])[0]
                buffer = io.BytesIO()
                picture.save(buffer, format="JPEG", quality=85)
                answered["heatmap"] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
            return answered
        except ImageRejected as e:
            raise HTTPException(e.status, str(e)) from None
        finally:
            image.close()

    @app.post("/predict")
    async def predict(request: Request, k: int = 5, explain: bool = False) -> Response:
        try:
            return await answer(request, k, explain)
        finally:
            release_memory()  # what the request's body and image took goes back to the system, refused or not

    async def answer(request: Request, k: int, explain: bool) -> Response:
        if k < 1:
            raise HTTPException(400, f"k must be at least 1, got {k}")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes + FORM_OVERHEAD:
            raise HTTPException(413, f"request body of {int(declared):,} bytes is over the {max_bytes:,}-byte limit")
        async with reading:
            data, name = await read_upload(request)
            if data is None:
                return Response(status_code=400)  # the client went away mid-upload: nobody to answer
            try:
                image = await run_in_threadpool(open_image, data, max_bytes=max_bytes, max_pixels=max_pixels, name=name)
            except ImageRejected as e:
                raise HTTPException(e.status, str(e)) from None
            del data
        cost = decode_bytes(image)
        await decoding.acquire(cost)
        try:
            async with working:
                start = time.perf_counter()
                answered = await run_in_threadpool(decode_and_predict, image, name, k, explain)
        finally:
            await decoding.release(cost)
        milliseconds = (time.perf_counter() - start) * 1000
        return JSONResponse({**answered, "model": predictor.name, "milliseconds": round(milliseconds, 2)})

    return app


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve a trained MobileNet over HTTP (FastAPI + uvicorn).")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="train.py checkpoint (.pt), export.py model (.onnx), or a published model as it is: a Google .tflite "
        "with its labels file beside it, or inat-birds (names 964 bird species with no training)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=port, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--max-bytes", type=positive_int, default=MAX_BYTES, help=f"largest upload in bytes (default: {MAX_BYTES})"
    )
    p.add_argument(
        "--max-pixels", type=positive_int, default=MAX_PIXELS, help=f"largest image in pixels (default: {MAX_PIXELS})"
    )
    p.add_argument(
        "--max-concurrent",
        type=positive_int,
        default=MAX_CONCURRENT,
        help=f"uploads decoded at a time (default: {MAX_CONCURRENT})",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    require("fastapi", "uvicorn", "multipart", purpose="serve.py")
    import uvicorn

    args = get_args_parser().parse_args(argv)
    limit_malloc_arenas()  # before uvicorn's and the thread pool's threads exist
    predictor = Predictor.load(args.checkpoint)
    app = create_app(
        predictor, max_bytes=args.max_bytes, max_pixels=args.max_pixels, max_concurrent=args.max_concurrent
    )
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    run("serve.py", main)
