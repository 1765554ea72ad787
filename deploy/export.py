"""Export a trained model for services (ONNX) and phones (ExecuTorch), and check the file against PyTorch.

Both exports start from the BN-folded inference model (`optimize_for_inference`, kept in NCHW: the runtimes
choose their own layouts) and carry the metadata a client needs (`predictor.export_metadata`: the model's card,
with its class names, input size and normalization): inside the ONNX file (`metadata_props["fgm.metadata"]`) and, for both, in a JSON
file beside the model (`PATH.json`).

- ONNX: `torch.onnx.export` (the torch.export-based exporter), opset 20, dynamic batch; run with onnxruntime.
- ExecuTorch (`.pte`): `torch.export` -> `to_edge_transform_and_lower` with the XNNPACK partitioner (the
  CPU backend ExecuTorch's Android and iOS runtimes ship) -> program; batch 1, as a phone classifies one
  photo at a time; run with ExecuTorch's Python runtime.

Each file is written to a temporary name, verified on real images (max |logit difference| to PyTorch), and
only then moved into place.
"""

import contextlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from atomicfile import atomic_path, write_atomically
from cli import InputError
from deploy.predictor import METADATA_KEY

ONNX_OPSET = 20


class ExportMismatch(InputError, RuntimeError):
    """The exported file's logits differ from PyTorch's by more than the tolerance: nothing was written."""


@contextlib.contextmanager
def _quiet_exporters():
    # torch's exporters log missing torchvision ops and warn about their own pytree internals: not ours to fix.
    loggers = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\..*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _write_sidecar(path: Path, metadata: dict) -> Path:
    sidecar = path.with_name(path.name + ".json")
    write_atomically(sidecar, json.dumps(metadata, indent=2))
    return sidecar


def _reference_logits(model: nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(images)).numpy()


def export_onnx(
    model: nn.Module, metadata: dict, path: str | Path, images: np.ndarray, *, tolerance: float = 1e-4
) -> dict:
    """Write `model` as ONNX to `path` and check it with onnxruntime on `images` (N, 3, R, R float32)."""
    import onnx
    import onnxruntime as ort

    def write_and_run(tmp: Path) -> np.ndarray:
        with _quiet_exporters():
            torch.onnx.export(
                model,
                (torch.from_numpy(images[:2]),),
                str(tmp),
                dynamo=True,
                opset_version=ONNX_OPSET,
                input_names=["images"],
                output_names=["logits"],
                external_data=False,
                verbose=False,
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.save(proto, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images})[0]

    report = _export_verified(model, metadata, Path(path), images, tolerance, "onnxruntime", write_and_run)
    return dict(report, format="onnx", opset=ONNX_OPSET)


def export_executorch(
    model: nn.Module, metadata: dict, path: str | Path, images: np.ndarray, *, tolerance: float = 1e-4
) -> dict:
    """Write `model` as an ExecuTorch program (XNNPACK-delegated) to `path`; check it with ExecuTorch's runtime."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    def write_and_run(tmp: Path) -> np.ndarray:
        with _quiet_exporters():
            program = torch.export.export(model, (torch.from_numpy(images[:1]),))
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
        tmp.write_bytes(lowered.buffer)
        return run_executorch(tmp, images)

    report = _export_verified(model, metadata, Path(path), images, tolerance, "the ExecuTorch runtime", write_and_run)
    return dict(report, format="executorch", backend="xnnpack")


def _export_verified(model, metadata, path: Path, images, tolerance: float, runtime: str, write_and_run) -> dict:
    """Write to a temporary file beside `path`, compare its logits with PyTorch's, and only then move it in."""
    with atomic_path(path, suffix=path.suffix) as tmp:  # the suffix tells the exporter the format
        logits = write_and_run(tmp)
        report = _check(logits, _reference_logits(model, images), tolerance, path, runtime)
    return dict(report, path=str(path), sidecar=str(_write_sidecar(path, metadata)))


def run_executorch(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Logits of an exported `.pte` for `images`, one image per call (the program's batch is 1)."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return np.concatenate(
        [method.execute([torch.from_numpy(images[i : i + 1])])[0].numpy() for i in range(len(images))]
    )


def _check(logits: np.ndarray, reference: np.ndarray, tolerance: float, path: Path, runtime: str) -> dict:
    difference = float(np.abs(logits - reference).max())
    same_top1 = float((logits.argmax(1) == reference.argmax(1)).mean())
    if difference > tolerance:
        raise ExportMismatch(
            f"{path}: {runtime} differs from PyTorch by {difference:.2e} (> {tolerance:.0e}) on {len(logits)} images; "
            "file not written"
        )
    return {"images": len(logits), "max_abs_difference": difference, "same_top1": same_top1}
