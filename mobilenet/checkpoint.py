"""Checkpoints: assembled and written here, read here; atomic, `weights_only=True`, enough to rebuild the model.

A training checkpoint (`make_checkpoint`) holds `format_version`, `model` (state_dict), `model_config` (the
`create_model` arguments: architecture, width, dropout, classes), `card` (`mobilenet.card.ModelCard`: class
names, normalization, training resolution, test-time inference), `config` (the rest of the run record:
`training.config.RunConfig.of_checkpoint` puts it together), `epoch`, `metrics`, `best_val_top1`, and for
resuming `optimizer`, `scheduler`, `ema`, `scaler` and `rng`. Each fact has one home. `load_checkpoint`
rebuilds the model and its card; when the run kept an EMA of the weights, the EMA weights are the ones
evaluated during training, so they are the ones loaded.

Format versions: 1 (before the run record; no `format_version` key, `config` holds the raw options), 2 (class
names and `data_config` beside the run record) and 3 (the card). 1 and 2 are read by one upgrade
(`_upgrade`: `mobilenet.card.legacy_card`); a newer version is refused with a message naming it.
"""

import hashlib
import math
import pickle
from pathlib import Path

import torch

from atomicfile import write_atomically
from cli import InputError
from mobilenet.card import ModelCard, card_problem, legacy_card
from mobilenet.common import MobileNetBase
from mobilenet.factory import create_model
from mobilenet.gate import GATE_KEY

REQUIRED_KEYS = ("model", "model_config", "card")
LEGACY_KEYS = ("model", "model_config", "data_config", "class_names")  # formats 1 and 2
FORMAT_VERSION = 3


class CheckpointError(InputError, ValueError):
    """A file that is not a readable checkpoint of this project."""


def make_checkpoint(
    model: MobileNetBase,
    *,
    card: ModelCard,
    config: dict,
    gate: dict | None = None,
    epoch: int,
    metrics: dict,
    best_val_top1: float,
    training: dict | None = None,
) -> dict:
    """The checkpoint of `model` after `epoch`; `config` the run record without what the model's config and
    card hold; `training` the resume state (`optimizer`, `scheduler`, `ema`, `scaler`, `rng`), None for a
    weights-only file."""
    return {
        "format_version": FORMAT_VERSION,
        "model": model.state_dict(),
        "model_config": model.config,
        "card": card.to_dict(),
        **({GATE_KEY: gate} if gate is not None else {}),
        "config": config,
        "epoch": epoch,
        "metrics": metrics,
        "best_val_top1": best_val_top1,
        **(training or {}),
    }


def refuse_overwrite(path: str | Path, force: bool) -> None:
    """The one rule of every command for outputs that exist: FileExistsError naming it, unless `force`."""
    path = Path(path)
    exists = path.is_file() or (path.is_dir() and any(path.iterdir()))
    if exists and not force:
        raise FileExistsError(f"{path} already exists: give --force to replace it")


CHECKSUM_KEY = "tensor_sha256"


def tensor_checksum(state: object, name: str = "") -> str:
    """SHA-256 over every tensor in `state` (dicts in key order, lists in order): its name, dtype, shape and
    bytes. What a flipped byte in a file's tensor data changes, and `torch.load` does not notice."""
    digest = hashlib.sha256()

    def visit(value: object, where: str) -> None:
        if isinstance(value, torch.Tensor):
            flat = value.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{where}|{value.dtype}|{tuple(value.shape)}|".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                if key != CHECKSUM_KEY:
                    visit(value[key], f"{where}/{key}")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                visit(item, f"{where}/{i}")

    visit(state, name)
    return digest.hexdigest()


def save_checkpoint(state: dict, path: str | Path) -> None:
    """torch.save with the checksum of its tensors (`tensor_checksum`), written atomically (`write_atomically`)."""
    state = dict(state, **{CHECKSUM_KEY: tensor_checksum(state)})
    write_atomically(path, lambda f: torch.save(state, f))


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict; a missing, truncated, corrupt or foreign file raises a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    kind = _file_kind(path)
    if kind is not None:
        raise CheckpointError(f"{path}: {kind}, not a checkpoint (a .pt file written by train.py)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" in str(e):  # torch's advice (load it unsafely) is not given here
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors and plain data; refused (checkpoints are read "
                "with weights_only=True)"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {_first_line(e)}") from None
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {_first_line(e)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint of this project (a {type(state).__name__}, not a dict)")
    version = state.get("format_version", 1)
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r}; this version of the project reads 1 to {FORMAT_VERSION}"
        )
    missing = [k for k in (REQUIRED_KEYS if version == FORMAT_VERSION else LEGACY_KEYS) if k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a checkpoint of this project (missing {', '.join(missing)})")
    recorded = state.get(CHECKSUM_KEY)  # files written before checksums have none
    if recorded is not None and recorded != tensor_checksum(state):
        raise CheckpointError(f"{path}: its tensors do not match the checksum saved with them: the file is corrupt")
    if version < FORMAT_VERSION:
        state = _upgrade(state, path)
    problem = schema_problem(state)
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    return state


def _upgrade(state: dict, path: Path) -> dict:
    """A format 1 or 2 checkpoint in format 3's layout: its card from `class_names`, `data_config` and the run's
    test-time options (the run record keeps its copies of the model's facts: they agree)."""
    try:
        card = legacy_card(state)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    upgraded = {k: v for k, v in state.items() if k not in ("data_config", "class_names", CHECKSUM_KEY)}
    return dict(upgraded, format_version=FORMAT_VERSION, card=card.to_dict())


# The first bytes of files people mistake for a checkpoint, and what to call them.
_MAGIC = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"RIFF", "a RIFF (WebP?) file"),
)


def _file_kind(path: Path) -> str | None:
    """What a file that is plainly not a torch.save file is (None: it may be one: a zip archive or a pickle)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return None
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return "a TensorFlow Lite model (give it to --pretrained)"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    text = head.lstrip()
    if text.startswith((b"{", b"[")):
        return "a JSON file"
    if head.startswith(b"\x08") and path.suffix == ".onnx":
        return "an ONNX model (predict.py and serve.py read it as it is)"
    return "not a file torch.save writes" if head else "an empty file"


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


MODEL_CONFIG_KEYS = {"arch", "num_classes", "width_mult", "dropout", "round_nearest", "activation", "padding"}
MAX_CLASSES = 100_000


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def schema_problem(state: dict) -> str | None:
    """What is wrong with a checkpoint's fields, checked before anything is built from them (None: nothing).

    A checkpoint is data from anywhere: a wrong type, an unknown key or a class count that disagrees with the
    weights would otherwise surface later as a raw TypeError, an IndexError at prediction time, or a huge
    allocation."""
    config = state["model_config"]
    if not isinstance(config, dict):
        return f"field model_config must be a dict, not {type(config).__name__}"
    unknown = sorted(map(str, set(config) - MODEL_CONFIG_KEYS))
    if unknown:
        return f"field model_config has unknown keys {unknown[:5]}"
    if config.get("arch") not in ("v1", "v2"):
        return f"field model_config.arch must be 'v1' or 'v2', not {config.get('arch')!r}"
    if not _is_number(config.get("width_mult")) or not 0 < config["width_mult"] <= 4:
        return f"field model_config.width_mult must be a number in (0, 4], not {config.get('width_mult')!r}"
    classes = config.get("num_classes")
    if not isinstance(classes, int) or isinstance(classes, bool) or not 0 <= classes <= MAX_CLASSES:
        return f"field model_config.num_classes must be an integer in [0, {MAX_CLASSES:,}], not {classes!r}"
    if "dropout" in config and (not _is_number(config["dropout"]) or not 0 <= config["dropout"] < 1):
        return f"field model_config.dropout must be a number in [0, 1), not {config['dropout']!r}"
    if config.get("activation", "ReLU6") not in ("ReLU", "ReLU6"):
        return f"field model_config.activation must be 'ReLU' or 'ReLU6', not {config.get('activation')!r}"
    if config.get("padding", "symmetric") not in ("symmetric", "tf_same"):
        return f"field model_config.padding must be 'symmetric' or 'tf_same', not {config.get('padding')!r}"
    names = state["card"].get("class_names") if isinstance(state["card"], dict) else None
    if isinstance(names, list | tuple) and len(names) != classes:  # before the card's own checks: the root cause
        return f"field card.class_names has {len(names)} names for a {classes}-way classifier"
    problem = card_problem(state["card"])
    if problem:
        return problem
    if not isinstance(state.get("config", {}), dict):
        return f"field config must be a dict, not {type(state['config']).__name__}"
    gate = state.get(GATE_KEY)
    if gate is not None:
        weight, bias, no_bird = (
            (gate.get(k) for k in ("weight", "bias", "no_bird")) if isinstance(gate, dict) else (None,) * 3
        )
        features = state["model"].get("classifier.weight", torch.empty(0, 0)).shape[-1]
        if not (isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.shape[1] == features) or not (
            isinstance(bias, torch.Tensor) and bias.shape == weight.shape[:1]
        ):
            return f"field {GATE_KEY} must hold a head on the model's {features} features (weight, bias)"
        if not isinstance(no_bird, int) or not 0 <= no_bird < weight.shape[0]:
            return f"field {GATE_KEY}.no_bird must index one of its {weight.shape[0]} outputs"
    for key in ("model", *(["ema"] if state.get("ema") is not None else [])):
        weights = state[key].get("module") if key == "ema" and isinstance(state[key], dict) else state[key]
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            return f"field {key} must hold a state_dict (tensors by name)"
    head = state["model"].get("classifier.weight")
    if classes and (head is None or head.ndim != 2 or head.shape[0] != classes):
        shape = None if head is None else tuple(head.shape)
        return f"field model has a classifier of shape {shape} for {classes} classes"
    return None


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[MobileNetBase, ModelCard, dict]:
    """Rebuild the model from a checkpoint alone: `(model in eval mode, its card, info)`.

    `info` holds the run's `config` (the record without the model's facts: `RunConfig.of_checkpoint(info)`
    puts the whole record together), `model_config`, `card` (as stored), `epoch` and `metrics`.
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
    info = {
        "config": state.get("config", {}),
        "model_config": state["model_config"],
        "card": state["card"],
        "gate": state.get(GATE_KEY),
        "epoch": state.get("epoch"),
        "metrics": state.get("metrics", {}),
    }
    return model.eval(), ModelCard.from_dict(state["card"]), info
