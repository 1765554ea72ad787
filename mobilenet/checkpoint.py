"""Checkpoints: assembled and written here, read here; atomic, `weights_only=True`, enough to rebuild the model.

A training checkpoint (`make_checkpoint`) holds `format_version`, `model` (state_dict), `model_config` (the
`create_model` arguments), `data_config` (resolution and normalization the weights expect), `class_names`,
`config` (the run record, `training.config.RunConfig.to_dict()`), `epoch`, `metrics`, `best_val_top1`, and for
resuming `optimizer`, `scheduler`, `ema`, `scaler` and `rng`. `load_checkpoint` rebuilds the model from it;
when the run kept an EMA of the weights, the EMA weights are the ones evaluated during training, so they are
the ones loaded.

Format versions: 1 (before the run record; no `format_version` key, `config` holds the raw options) and 2.
Both load; a newer version is refused with a message naming it.
"""

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

from mobilenet.common import MobileNetBase
from mobilenet.factory import create_model

REQUIRED_KEYS = ("model", "model_config", "data_config", "class_names")
FORMAT_VERSION = 2


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this project."""


def make_checkpoint(
    model: MobileNetBase,
    *,
    class_names: list[str],
    config: dict,
    epoch: int,
    metrics: dict,
    best_val_top1: float,
    training: dict | None = None,
) -> dict:
    """The checkpoint of `model` after `epoch`; `training` holds the resume state (`optimizer`, `scheduler`,
    `ema`, `scaler`, `rng`), None for a weights-only file."""
    return {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "model_config": model.config,
        "data_config": model.data_config,
        "class_names": list(class_names),
        "config": config,
        "epoch": epoch,
        "metrics": metrics,
        "best_val_top1": best_val_top1,
        **(training or {}),
    }


def write_atomically(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(file)` into a temporary file in the same folder, then os.replace: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict, path: str | Path) -> None:
    """torch.save, written atomically (`write_atomically`)."""
    write_atomically(path, lambda f: torch.save(state, f))


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
    version = state.get("format_version", 1)
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this version of the project reads 1 to {FORMAT_VERSION}"
        )
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
