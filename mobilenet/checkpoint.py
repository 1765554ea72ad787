"""Checkpoints: written atomically, read with `weights_only=True`, and enough to rebuild the model alone.

A training checkpoint holds `model` (state_dict), `model_config` (the `create_model` arguments),
`data_config` (resolution and normalization the weights expect), `class_names`, `config` (the resolved
training options), `epoch`, `metrics`, and for resuming `optimizer`, `scheduler`, `ema`, `scaler` and
`rng`. `load_checkpoint` rebuilds the model from it; when the run kept an EMA of the weights, the EMA
weights are the ones evaluated during training, so they are the ones loaded.
"""

import os
import tempfile
from pathlib import Path

import torch

from mobilenet.common import MobileNetBase
from mobilenet.factory import create_model

REQUIRED_KEYS = ("model", "model_config", "data_config", "class_names")


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this project."""


def save_checkpoint(state: dict, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict; a missing, truncated, corrupt or foreign file raises a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {reason}") from None
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing {', '.join(missing)})")
    return state


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[MobileNetBase, dict]:
    """Rebuild the model from a checkpoint alone: `(model in eval mode, info)`.

    `info` holds `config`, `model_config`, `class_names`, `data_config` (normalization, resolution),
    `epoch` and `metrics`.
    """
    state = read_checkpoint(path, map_location)
    model = create_model(**state["model_config"])
    weights = state["ema"]["module"] if state.get("ema") else state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: weights do not fit the recorded architecture: {str(e).splitlines()[0]}"
        ) from None
    model.data_config = dict(state["data_config"])
    info = {
        "config": state.get("config", {}),
        "model_config": state["model_config"],
        "class_names": list(state["class_names"]),
        "data_config": dict(state["data_config"]),
        "epoch": state.get("epoch"),
        "metrics": state.get("metrics", {}),
    }
    return model.eval(), info
