"""Execute the teaching notebooks headless from a clean kernel and save them with their outputs.

    python -m notebooks.run                  # all six, small runs, into runs/notebooks/ (`make notebooks`)
    python -m notebooks.run 03_mobilenet_v2   # some of them
    NOTEBOOKS_FULL=1 python -m notebooks.run --in-place   # refresh the committed full-size outputs
                                                          # (`make notebooks-full`)

The committed notebooks hold full-size outputs, so only a full-size run may replace them: `--in-place`
without `NOTEBOOKS_FULL=1` is refused. Each notebook runs with the repository root as its working directory;
an error in any cell stops it with the cell's traceback and a non-zero exit.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent
REPO_ROOT = NOTEBOOK_DIR.parent
DEFAULT_OUT = REPO_ROOT / "runs" / "notebooks"  # git-ignored
# A guard against a hung kernel, not a speed test: the slowest small-run cell takes well under a minute on
# 2 cores, and a busy machine must not fail it.
CELL_TIMEOUT_S = 3600


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """The notebooks in order, or the ones named (`03`, `03_mobilenet_v2` or `03_mobilenet_v2.ipynb`)."""
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return paths
    chosen = []
    for name in names:
        stem = Path(name).stem
        matches = [p for p in paths if p.stem == stem or p.stem.startswith(stem + "_")]
        if not matches:
            raise SystemExit(f"notebooks.run: no notebook named {name!r} in {NOTEBOOK_DIR}")
        chosen += matches
    return chosen


# Log lines that say something about this session, not about the lesson: left out of saved outputs.
SESSION_NOISE = (
    "allocator: glibc malloc",
    "is stale (its source changed): rebuilding",
    "building packed cache",
    "SyncActivityProfilerHandler",  # torch.profiler's start and stop lines
)


def without_session_noise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """`nb` without execution timestamps and without the stream lines of `SESSION_NOISE`."""
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
        kept = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                lines = output["text"].splitlines(keepends=True)
                output["text"] = "".join(line for line in lines if not any(noise in line for noise in SESSION_NOISE))
                if not output["text"]:
                    continue
            kept.append(output)
        if cell.get("cell_type") == "code":
            cell["outputs"] = kept
    return nb


def compact_pictures(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """`nb` with every PNG output re-encoded with a 256-colour palette when that is smaller: plots have few
    colours, and the committed notebooks must stay under 1 MB (photos are shown as JPEG already)."""
    import base64
    import io

    from PIL import Image

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" not in data:
                continue
            original = base64.b64decode(data["image/png"])
            picture = Image.open(io.BytesIO(original))
            palette = picture.convert("RGBA").quantize(256, method=Image.Quantize.FASTOCTREE)
            buffer = io.BytesIO()
            palette.save(buffer, "PNG", optimize=True)
            if buffer.tell() < len(original):
                data["image/png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return nb


def execute(path: Path, *, out: Path | None = None, timeout: int = CELL_TIMEOUT_S) -> float:
    """Run every cell of `path` in a fresh python3 kernel; write the executed notebook to `out` (default: in place)."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    # IPC sockets in a private runtime folder rather than TCP on loopback: nothing else on the machine can
    # talk to the kernel.
    with tempfile.TemporaryDirectory(prefix="notebook-kernel-") as sockets:
        kernel = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel"))
        client = NotebookClient(nb, km=kernel, timeout=timeout, resources={"metadata": {"path": str(REPO_ROOT)}})
        try:
            client.execute(cleanup_kc=True)  # stop the client's sockets and the kernel when done
        finally:
            if kernel.has_kernel:
                kernel.shutdown_kernel(now=True)
    nbformat.write(compact_pictures(without_session_noise(nb)), out or path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Re-execute the teaching notebooks from clean kernels.")
    parser.add_argument("names", nargs="*", help="notebooks to run (default: all)")
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="folder for the executed copies (default: runs/notebooks)"
    )
    parser.add_argument(
        "--in-place", action="store_true", help="replace the committed notebooks (only with NOTEBOOKS_FULL=1)"
    )
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds per cell, a hang guard")
    args = parser.parse_args(argv)
    if args.in_place and os.environ.get("NOTEBOOKS_FULL", "") in ("", "0"):
        raise SystemExit(
            "notebooks.run: error: --in-place replaces the committed full-size outputs: set NOTEBOOKS_FULL=1"
        )
    out = Path(args.out)
    for path in notebook_paths(args.names):
        target = path if args.in_place else out / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"{path.name} -> {target} ...", end=" ", flush=True)
        seconds = execute(path, out=target, timeout=args.timeout)
        print(f"{seconds:.1f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
