"""Our inference fast path against onnxruntime, the runtime a user would deploy the same model to.

One fine-tuned-shaped model (V2 1.0/224 with Google's "SAME" padding, a 20-class head, non-trivial batch-norm
statistics), exported by `deploy.export.export_onnx` (the file `export.py` writes), run by onnxruntime with the
same number of threads as torch, at batch 1 and 32, interleaved with `optimize_for_inference`. The verdict is
our images/s over onnxruntime's at batch 32 (target 0.8); each is also placed against this CPU's fp32 matmul
rate measured in the same run, and each runtime's own profiler splits its time by layer kind (depthwise,
pointwise 1x1, full convolution, the rest), which says where the difference lies.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from bench.conftest import verdict
from bench.test_fast_path import matmul_macs_per_second
from evaluation.timing import interleaved, kind_of_weight, ms_by_layer_kind
from mobilenet import create_model, optimize_for_inference
from mobilenet.flops import count_macs

ort = pytest.importorskip(
    "onnxruntime", reason="the deploy stack is not installed: pip install -r requirements-deploy.txt"
)


@pytest.fixture(scope="module")
def fine_tuned_shape():
    torch.manual_seed(0)
    model = create_model("v2", num_classes=20, activation="ReLU6", padding="tf_same").eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return model


def session_options(profile_prefix: Path | None = None) -> "ort.SessionOptions":
    """As many threads as torch uses, and none busy-waiting after a run: spinning threads would take the cores
    from the torch rounds interleaved with them (measured: ours 0.14 s alone, 0.55 s beside a spinning
    session, batch 32)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix is not None:  # onnxruntime's profiler writes its JSON to PREFIX_<date>.json
        options.enable_profiling, options.profile_file_prefix = True, str(profile_prefix)
    return options


def onnxruntime_ms_by_kind(path: Path, feeds: dict, calls: int = 3) -> dict[str, float]:
    """Milliseconds per call of each layer kind in onnxruntime, from its own profiler (node kernel times)."""
    import json

    session = ort.InferenceSession(
        str(path), session_options(profile_prefix=path.parent / "profile"), providers=["CPUExecutionProvider"]
    )
    session.run(None, feeds)  # warm-up: left out below by counting the last `calls` runs only
    for _ in range(calls):
        session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    start = runs[-calls]["ts"]
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
            continue
        op, shapes = e["args"]["op_name"], e["args"].get("input_type_shape", [])
        weight = next(iter(shapes[1].values())) if op in ("Conv", "FusedConv") and len(shapes) > 1 else None
        kind = kind_of_weight(weight) if weight else "other"
        totals[kind] = totals.get(kind, 0.0) + e["dur"] / 1000 / calls
    return totals


@pytest.mark.parametrize("batch", [1, 32])
def test_fast_path_against_onnxruntime(benchmark, record, fine_tuned_shape, batch, tmp_path):
    from deploy.export import export_onnx

    fast = optimize_for_inference(fine_tuned_shape)
    images = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    export_onnx(optimize_for_inference(fine_tuned_shape, channels_last=False), {}, tmp_path / "m.onnx", images[:2])
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), session_options(), providers=["CPUExecutionProvider"])
    x = torch.from_numpy(images).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ours = fast(x).numpy()
        t = interleaved(
            {"ours": lambda: fast(x), "onnxruntime": lambda: session.run(None, {"images": images})},
            rounds=5 if batch > 1 else 20,
        )
    theirs = session.run(None, {"images": images})[0]
    # Where the difference lies: each runtime's own profiler, by layer kind (profiled apart from the timing)
    ours_kinds = ms_by_layer_kind(fast, x)
    theirs_kinds = onnxruntime_ms_by_kind(tmp_path / "m.onnx", {"images": images})
    macs, _ = count_macs(fine_tuned_shape, 224)
    rate = matmul_macs_per_second()
    ratio = t["onnxruntime"].median / t["ours"].median  # our images/s over theirs
    record(
        arch="v2",
        width=1.0,
        resolution=224,
        batch=batch,
        dtype="float32",
        layout="channels_last",
        mode="fast path against onnxruntime",
        ours_s=t["ours"].median,
        onnxruntime_s=t["onnxruntime"].median,
        ours_over_onnxruntime=ratio,
        ours_fraction_of_matmul=macs * batch / t["ours"].median / rate,
        onnxruntime_fraction_of_matmul=macs * batch / t["onnxruntime"].median / rate,
        max_abs_diff=float(np.abs(ours - theirs).max()),
        ours_ms_by_kind=ours_kinds,
        onnxruntime_ms_by_kind=theirs_kinds,
        verdicts=[
            verdict(
                f"fast path / onnxruntime images/s, batch {batch} (0.8 wanted at 32)",
                0.8,
                ratio,
                max(t["ours"].spread, t["onnxruntime"].spread),
            )
        ],
    )
    print(
        f"\nbatch {batch}: ours {t['ours'].median * 1000:.1f} ms, onnxruntime {t['onnxruntime'].median * 1000:.1f} ms "
        f"({ratio:.2f}x); of the matmul rate: ours {macs * batch / t['ours'].median / rate:.0%}, "
        f"onnxruntime {macs * batch / t['onnxruntime'].median / rate:.0%}"
    )
    for kind in sorted(set(ours_kinds) | set(theirs_kinds)):
        print(f"  {kind}: ours {ours_kinds.get(kind, 0):.1f} ms, onnxruntime {theirs_kinds.get(kind, 0):.1f} ms")
    # both profilers saw the whole network: every convolution kind of V2 in each
    assert {"depthwise", "pointwise 1x1", "full conv"} <= set(ours_kinds) & set(theirs_kinds)
    assert np.abs(ours - theirs).max() < 1e-3  # the same function in both runtimes
    with torch.inference_mode():
        benchmark.pedantic(fast, args=(x,), rounds=1, iterations=1)
