"""Record `references/layouts/*.json` from the real torchvision and timm: `python -m references.make_layouts`.

Not a dependency of the project: install the libraries beside it for this once, e.g.
`pip install --no-deps --target /tmp/libs torchvision==0.28.0 timm==1.0.31` and
`PYTHONPATH=/tmp/libs python -m references.make_layouts` (with a CUDA build of torchvision and the CPU torch,
torchvision's operator registrations fail to load; the models do not need them, so they are skipped here).
"""

import json
import sys
import types

import torch

from references.layouts import FOLDER, MODELS, seeded_input, seeded_state


def main() -> None:
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import timm
    import torchvision

    FOLDER.mkdir(exist_ok=True)
    for name, (call, resolution) in MODELS.items():
        model = eval(call, {"torchvision": torchvision, "timm": timm}).eval()
        layout = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
        model.load_state_dict(seeded_state(layout))
        with torch.no_grad():
            logits = model(seeded_input(resolution))
        record = {
            "made_by": f"{call} (torchvision {torchvision.__version__}, timm {timm.__version__}, torch {torch.__version__})",
            "resolution": resolution,
            "layout": layout,
            "logits": [[round(v, 6) for v in row] for row in logits.tolist()],
        }
        (FOLDER / f"{name}.json").write_text(json.dumps(record) + "\n")
        print(f"{name}: {len(layout)} tensors, logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
