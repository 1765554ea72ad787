"""From a trained checkpoint to phones and services.

- `images`: decoding untrusted image bytes with size and pixel limits (clear errors, never a crash).
- `predictor.Predictor`: top-k species from a checkpoint (BN-folded fast path) or an exported ONNX model.
- `export`: ONNX and ExecuTorch export, each file verified against PyTorch on real images before it is kept.
- `requirements`: the one-line message naming what to install when the optional deploy stack is missing.
- `quantize`: int8 post-training static quantization (PT2E, x86 Inductor) and its fp32-vs-int8 report.
"""
