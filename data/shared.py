"""Where the optional `../shared` folder is: real CUB images (cub20) and Google's MobileNet checkpoints.

Development machines and CI keep it beside the checkout; a fresh clone has none, and every test, benchmark
and notebook that uses it falls back or skips. The environment variable `FGM_SHARED` overrides the lookup:
a folder path, or `none` to treat the folder as absent (how CI runs the suite as a fresh clone sees it).
"""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV_VAR = "FGM_SHARED"


def shared_root() -> Path | None:
    """The shared folder, or None when it is absent or hidden with `FGM_SHARED=none`."""
    setting = os.environ.get(ENV_VAR, "").strip()
    if setting.lower() == "none":
        return None
    root = Path(setting) if setting else REPO.parent / "shared"
    return root if root.is_dir() else None


def shared_path(*parts: str) -> Path | None:
    """A path inside the shared folder if it exists there, else None (e.g. `shared_path("weights")`)."""
    root = shared_root()
    if root is None:
        return None
    path = root.joinpath(*parts)
    return path if path.exists() else None
