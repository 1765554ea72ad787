"""`ModelCard`: how to feed a set of weights and read its answer, carried with the weights.

As torchvision's `Weights` carry their transforms and metadata, a card travels with a model wherever it goes:
checkpoints store it under one key (`card`), an exported ONNX file in its metadata, and a Google `.tflite`
file or a named start (`mobilenet.pretrained`) produces one when imported. Every command that applies a model
builds its input from the card (`transform`) and wraps the model in the card's test-time inference
(`inference.wrap`), so `evaluate.py`, `predict.py`, `serve.py`, `export.py`, int8 quantization and the bench
studies see one view of each model.

A card holds the class names, the normalization the weights expect (mean and std of RGB in [0, 1]), the
resolution they were trained at, the test-time inference (`mobilenet.tta.Inference`: test resolution, flip
averaging, a second look), where the weights came from, and how the answer is given (`deploy.answer`): the
"is there a bird?" gate's threshold on the probability of no bird (None: no gate), the confidence below which
the answer falls back from the species to its genus, family or order, and each class's look-alike (the class
its held-out photos were taken for most, `evaluation.metrics.lookalikes`).
"""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from mobilenet.preprocess import Compose, Normalize, Resize, ResizeCenterCrop, ToFloat
from mobilenet.tta import Inference

VIEWS = ("center", "full")  # the test-time views of a photo (`transform`)
MIN_RESOLUTION, MAX_RESOLUTION = 16, 4096


@dataclass(frozen=True)
class ModelCard:
    """What a model's weights need to be applied: see the module docstring."""

    class_names: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resolution: int  # the resolution the weights were trained at
    inference: Inference  # how a test image is classified (its resolution may differ: FixRes)
    source: str = ""  # where the weights came from: a run folder, a file name, a URL
    gate_threshold: float | None = None  # "no bird" when P(no bird) reaches it; None: the model has no gate
    answer_threshold: float = 0.0  # the species needs this probability, else the genus, family... (0: always)
    lookalikes: tuple[int, ...] = ()  # per class, the class its photos are taken for most (-1: unknown)

    def transform(self, *, view: str = "center", resolution: int | None = None, normalize: bool = True) -> Compose:
        """uint8 (3, H, W) image -> the model's input at the test resolution (or `resolution`): the `view`
        ("center": resize and centre crop; "full": the whole image squashed), then normalized (unless not
        `normalize`: uint8 pixels, for loaders that normalize whole batches)."""
        size = resolution or self.inference.resolution
        if view not in VIEWS:
            raise ValueError(f"view must be one of {VIEWS}, not {view!r}")
        pixels = ResizeCenterCrop(size) if view == "center" else Resize(size)
        return Compose([pixels, ToFloat(), self.normalize()] if normalize else [pixels])

    def normalize(self) -> Normalize:
        """The input scaling the weights expect, on [0, 1] floats."""
        return Normalize(self.mean, self.std)

    def with_inference(
        self, *, resolution: int | None = None, hflip: bool | None = None, look_twice: bool | None = None
    ) -> "ModelCard":
        """This card with the given test-time choices changed (None: as recorded)."""
        recorded = self.inference
        inference = Inference(
            resolution or recorded.resolution,
            recorded.hflip if hflip is None else hflip,
            recorded.look_twice if look_twice is None else look_twice,
        )
        return dataclasses.replace(self, inference=inference)

    def one_pass(self) -> "ModelCard":
        """This card with one plain pass at the training resolution (int8 and the studies measure that)."""
        return dataclasses.replace(self, inference=Inference(self.resolution))

    def to_dict(self) -> dict:
        """Plain data (JSON and `torch.load(weights_only=True)` can hold it)."""
        return {
            "class_names": list(self.class_names),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "resolution": self.resolution,
            "inference": dataclasses.asdict(self.inference),
            "source": self.source,
            "gate_threshold": self.gate_threshold,
            "answer_threshold": self.answer_threshold,
            "lookalikes": list(self.lookalikes),
        }

    @classmethod
    def from_dict(cls, values: Mapping) -> "ModelCard":
        """The card `to_dict` wrote; ValueError naming the field when `card_problem` finds one."""
        problem = card_problem(values)
        if problem:
            raise ValueError(problem)
        inference = values["inference"]
        return cls(
            tuple(values["class_names"]),
            tuple(float(v) for v in values["mean"]),  # type: ignore[arg-type]  # three, checked above
            tuple(float(v) for v in values["std"]),  # type: ignore[arg-type]
            values["resolution"],
            Inference(inference["resolution"], inference["hflip"], inference["look_twice"]),
            values.get("source", ""),
            values.get("gate_threshold"),
            values.get("answer_threshold", 0.0),
            tuple(values.get("lookalikes", ())),
        )


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and MIN_RESOLUTION <= value <= MAX_RESOLUTION


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def card_problem(values: object) -> str | None:
    """What is wrong with a card read from a file (None: nothing), as "field X must ...": a card is data
    from anywhere, checked before anything is built from it."""
    if not isinstance(values, Mapping):
        return f"card must be a dict, not {type(values).__name__}"
    names = values.get("class_names")
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        return "field card.class_names must be a list of strings"
    for key in ("mean", "std"):
        value = values.get(key)
        if not isinstance(value, list | tuple) or len(value) != 3 or not all(map(_is_number, value)):
            return f"field card.{key} must be 3 numbers, not {value!r}"
    if not all(v > 0 for v in values["std"]):
        return "field card.std must be positive"
    if not _is_size(values.get("resolution")):
        return f"field card.resolution must be an integer in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], not {values.get('resolution')!r}"
    inference = values.get("inference")
    if not isinstance(inference, Mapping) or not _is_size(inference.get("resolution")):
        return f"field card.inference must hold a test resolution in [{MIN_RESOLUTION}, {MAX_RESOLUTION}]"
    if not all(isinstance(inference.get(k), bool) for k in ("hflip", "look_twice")):
        return "field card.inference.hflip and .look_twice must be true or false"
    if not isinstance(values.get("source", ""), str):
        return "field card.source must be a string"
    gate = values.get("gate_threshold")
    if gate is not None and not (_is_number(gate) and 0 < gate <= 1):
        return f"field card.gate_threshold must be a probability in (0, 1] or null, not {gate!r}"
    if not (_is_number(values.get("answer_threshold", 0.0)) and 0 <= values.get("answer_threshold", 0.0) <= 1):
        return f"field card.answer_threshold must be a probability in [0, 1], not {values.get('answer_threshold')!r}"
    similar = values.get("lookalikes", [])
    count = len(names)
    if not isinstance(similar, list | tuple) or len(similar) not in (0, count):
        return f"field card.lookalikes must list one class per class name ({count}) or none"
    if not all(isinstance(j, int) and not isinstance(j, bool) and -1 <= j < count for j in similar):
        return f"field card.lookalikes must hold class indices in [-1, {count})"
    return None


def legacy_card(state: Mapping) -> ModelCard:
    """The card of a file written before cards (checkpoint formats 1 and 2; ONNX exports before them): its
    `class_names`, `data_config` (or, in an ONNX file, top-level `resolution`, `mean`, `std`) and the run's
    test-time options (`config.test_scale`, `test_hflip`, `look_twice`; an ONNX file describes them in
    `inference`). ValueError naming a missing or wrong field."""
    if "data_config" in state:
        data, config = state["data_config"], state.get("config") or {}
        if not isinstance(data, Mapping) or not isinstance(config, Mapping):
            raise ValueError("field data_config and config must be dicts")
        resolution = data.get("resolution")
        scale = config.get("test_scale", 1.0)
        test = round(resolution * scale) if _is_size(resolution) and _is_number(scale) else resolution
        hflip, look_twice = bool(config.get("test_hflip")), bool(config.get("look_twice"))
    else:  # an ONNX export's metadata: `resolution` is the test resolution, baked into the graph with the rest
        test = state.get("resolution")
        resolution = state.get("training_resolution", test)
        described = str(state.get("inference", ""))
        hflip, look_twice = "flip-averaged" in described, "look-twice" in described
        data = state
    values = {
        "class_names": state.get("class_names"),
        "mean": data.get("mean"),
        "std": data.get("std"),
        "resolution": resolution,
        "inference": {"resolution": test, "hflip": hflip, "look_twice": look_twice},
    }
    return ModelCard.from_dict(values)
