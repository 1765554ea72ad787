"""Top-k species for images, from a training checkpoint or an exported ONNX model.

`Predictor.load(path)` takes either:
- a checkpoint written by train.py (`.pt`): rebuilt by `load_checkpoint`, BN-folded with
  `optimize_for_inference` and wrapped in the run's test-time inference (`mobilenet.tta`: flip averaging,
  look-twice), the same model `export.py` exports;
- an ONNX file from `export.py` (`.onnx`): run with onnxruntime; class names and normalization come from the
  file's metadata (`fgm.metadata`, the JSON that is also written beside it);
- a Google `.tflite` file with its labels file beside it, or a named start (`inat-birds`, `imagenet`): the
  published model as it is, with no training here (one plain pass); the iNaturalist-birds file names 964
  species, common name first.

Every model comes with its card (`mobilenet.card.ModelCard`): a checkpoint's, the card stored in an ONNX
file's metadata, or the one a `.tflite` import makes. Preprocessing is the card's test-time view
(`ModelCard.transform`) at its test resolution, so predictions match `evaluate.py`.
"""

import dataclasses
import json
from pathlib import Path
from typing import cast

import numpy as np
import torch
from PIL import Image

from data.cub import pil_to_tensor
from data.taxonomy import taxa_of
from deploy.answer import answer, group_levels
from deploy.requirements import require
from evaluation.gradcam import grad_cam
from mobilenet import load_checkpoint, optimize_for_inference
from mobilenet.card import ModelCard, legacy_card
from mobilenet.checkpoint import CheckpointError
from mobilenet.common import MobileNetBase
from mobilenet.gate import Gated, gate_in_use
from mobilenet.preprocess import CENTRE_CROP_FRACTION
from mobilenet.pretrained import NAMED_STARTS, load_pretrained

NO_BIRD = "no bird (the model's background output)"
METADATA_KEY = "fgm.metadata"  # the key of the JSON metadata in an exported ONNX file


def export_metadata(card: ModelCard, model_config: dict, *, gated: bool = False) -> dict:
    """What a deployed model needs besides its weights: its card (class names, normalization, resolution,
    the test-time inference built into the exported graph, the answer's thresholds) and a description of its
    input and output (`gated`: a last column with the probability of no bird)."""
    return {
        "card": card.to_dict(),
        "arch": model_config["arch"],
        "width_mult": model_config["width_mult"],
        "inference": card.inference.describe(),
        "gated": gated,
        "input": "float32 NCHW, RGB scaled to [0, 1] then (x - mean) / std",
        "output": "logits, one per class name" + (", then the probability of no bird" if gated else ""),
    }


def card_of_metadata(metadata: object) -> ModelCard:
    """The card in an exported model's metadata (files exported before cards: `legacy_card`); ValueError
    naming the field."""
    if not isinstance(metadata, dict):
        raise ValueError("is not a JSON object")
    card = ModelCard.from_dict(metadata["card"]) if "card" in metadata else legacy_card(metadata)
    if not card.class_names:
        raise ValueError("field card.class_names must be a non-empty list of strings")
    return card


def inference_model(
    model: MobileNetBase, card: ModelCard, *, channels_last: bool, gate: dict | None = None
) -> torch.nn.Module:
    """The BN-folded model wrapped in the card's test-time inference: what predict, serve and export run. With a
    `gate` (`mobilenet.gate`), one plain pass that also returns the probability of no bird as a last column."""
    fast = optimize_for_inference(model, channels_last=channels_last)
    if gate is None:
        return card.inference.wrap(fast)
    if card.inference.passes > 1:
        raise ValueError("a gated model answers in one plain pass (the gate reads its pooled features)")
    return Gated(cast(MobileNetBase, fast), gate["weight"], gate["bias"], gate["no_bird"]).eval()


def preprocessor(card: ModelCard):
    """The card's test-time view of a photo: RGB PIL image -> normalized float32 array (3, R, R).

    A photo whose shorter side is over twice the view's (`resolution / CENTRE_CROP_FRACTION`) is first reduced
    by an integer factor with PIL's box filter, keeping it above twice: the resize would average those pixels
    anyway, and a 40-megapixel upload then never becomes a 480 MB float tensor. Photos the size of CUB's are
    not touched, so predictions on them are evaluate.py's."""
    transform = card.transform()
    shorter = round(card.inference.resolution / CENTRE_CROP_FRACTION)

    def preprocess(image: Image.Image) -> np.ndarray:
        factor = min(image.size) // (2 * shorter)
        if factor >= 2:
            image = image.reduce(factor)
        return transform(pil_to_tensor(image)).numpy().astype(np.float32)

    return preprocess


class Predictor:
    """Callable model plus its card; `predict(images, k)` answers each photo as a field guide would: is there a
    bird (the gate, where the model has one), the answer at the level it is sure of, and the top-k species."""

    def __init__(
        self, run, card: ModelCard, model_config: dict, source: str, *, gated: bool = False, model=None
    ) -> None:
        # float32 array (N, 3, R, R) -> (N, K) logits, then with a gate head (`gated`) P(no bird) as one more column
        self._run = run
        self.card = card
        self.gated = gated
        self.class_names: list[str] = list(card.class_names)
        # The bird file's own "background" output is its gate; it is never answered as a species.
        self.no_bird_output = self.class_names.index(NO_BIRD) if NO_BIRD in self.class_names else None
        self.species = sum(name != NO_BIRD for name in self.class_names)  # what the page counts
        self.levels = group_levels(taxa_of(self.class_names))  # genus, family, order: for `answer`
        self._model = model  # the PyTorch model, for `explain` (None for an ONNX file)
        self.source = source
        # What the service shows: the model, not the server's paths.
        arch, width, size = model_config.get("arch", "?"), model_config.get("width_mult", 0), card.inference.resolution
        self.name = f"MobileNet{str(arch).upper()} {width:g}/{size} ({Path(source).name})"
        self.preprocess = preprocessor(card)  # RGB PIL image -> the model's input (3, R, R) float32

    @classmethod
    def load(cls, path: str | Path) -> "Predictor":
        if str(path) in NAMED_STARTS:
            return cls._load_published(str(path))
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model file")
        if path.suffix == ".onnx":
            return cls._load_onnx(path)
        if path.suffix == ".tflite":
            return cls._load_published(str(path))
        model, card, info = load_checkpoint(path)
        gate = gate_in_use(card.gate_threshold, info)
        fast = inference_model(model, card, channels_last=True, gate=gate)

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return fast(torch.from_numpy(x)).float().numpy()

        return cls(run, card, info["model_config"], str(path), gated=gate is not None, model=fast)

    @classmethod
    def _load_published(cls, spec: str) -> "Predictor":
        from data.species_map import common_name_first
        from mobilenet.tflite import TFLiteImportError

        try:
            model, card = load_pretrained(spec)
        except (TFLiteImportError, RuntimeError, ValueError) as e:
            raise CheckpointError(str(e)) from None
        outputs = model.config["num_classes"]
        if not outputs:
            raise CheckpointError(f"{spec}: the file has no classifier (a feature extractor): nothing to name")
        labels = card.class_names or [f"output {i}" for i in range(outputs)]
        # The bird file's last output is its "nothing here" class: named as an answer, not as a species.
        names = tuple(NO_BIRD if x == "background" else common_name_first(x) for x in labels)
        card = dataclasses.replace(card, class_names=names)
        fast = inference_model(model, card, channels_last=True)

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return fast(torch.from_numpy(x)).float().numpy()

        predictor = cls(run, card, model.config, Path(spec).name, model=fast)
        predictor.name += ", as published (no training here)"
        return predictor

    @classmethod
    def _load_onnx(cls, path: Path) -> "Predictor":
        require("onnx", "onnxruntime", purpose=f"running {path.name}")
        import onnx
        import onnxruntime as ort

        try:
            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception as e:  # protobuf's DecodeError and friends: a truncated or foreign file
            raise CheckpointError(
                f"{path}: not a readable ONNX model (truncated or corrupt?): {type(e).__name__}"
            ) from None
        if METADATA_KEY not in props:
            raise CheckpointError(f"{path}: no '{METADATA_KEY}' metadata: not exported by export.py")
        try:
            metadata = json.loads(props[METADATA_KEY])
        except ValueError:
            raise CheckpointError(f"{path}: its '{METADATA_KEY}' metadata is not JSON") from None
        try:
            card = card_of_metadata(metadata)
        except ValueError as e:
            raise CheckpointError(f"{path}: metadata {e}") from None
        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            input_name = session.get_inputs()[0].name

            def run(x: np.ndarray) -> np.ndarray:
                return session.run(None, {input_name: x})[0]

            resolution = card.inference.resolution
            probe = run(np.zeros((1, 3, resolution, resolution), dtype=np.float32))
        except Exception as e:  # onnxruntime's errors: a graph that does not take the metadata's input
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{path}: the graph does not run on a {resolution}px input: {first}") from None
        gated = bool(metadata.get("gated"))
        if probe.shape != (1, len(card.class_names) + gated):
            raise CheckpointError(
                f"{path}: the graph gives {probe.shape[-1]} outputs for {len(card.class_names)} class names"
                + (" and the gate" if gated else "")
            )
        return cls(run, card, metadata, str(path), gated=gated)

    @property
    def explainable(self) -> bool:
        """Whether `explain` can read gradients (a PyTorch model, not an ONNX file)."""
        return self._model is not None

    def explain(self, images: list[Image.Image], targets: list[int]) -> list[Image.Image]:
        """Where the model looked for class `targets[i]` in photo `i`: Grad-CAM (`evaluation.gradcam`) of one
        plain pass, laid over the view the model saw, as RGB pictures of the test resolution."""
        from matplotlib import colormaps

        x = torch.from_numpy(np.stack([self.preprocess(img) for img in images]))
        inner = getattr(self._model, "model", self._model)  # inside a Gated or LookTwice wrapper: the network
        with torch.enable_grad():
            cams, _ = grad_cam(inner, x, torch.tensor(targets))
        mean, std = torch.tensor(self.card.mean).view(3, 1, 1), torch.tensor(self.card.std).view(3, 1, 1)
        pictures = []
        for view, cam in zip(x, cams):
            photo = (view * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
            heat = colormaps["jet"](cam.numpy())[..., :3]
            blend = (0.55 * photo + 0.45 * heat) * 255
            pictures.append(Image.fromarray(blend.round().astype(np.uint8)))
        return pictures

    def lookalike(self, index: int) -> str | None:
        """The name of the class that class `index`'s photos were most taken for (None: not known)."""
        similar = self.card.lookalikes
        return self.class_names[similar[index]] if similar and similar[index] >= 0 else None

    def logits(self, images: list[Image.Image]) -> np.ndarray:
        return self._run(np.stack([self.preprocess(img) for img in images]))

    def predict(self, images: list[Image.Image], k: int = 5) -> list[dict]:
        """Per image: `bird` (False: the gate found no bird; None: the model has no gate), `no_bird_probability`,
        `answer` (`{"level", "name", "probability"}` at the level the model is sure of, `deploy.answer`; None
        for no bird), `top`, the k most probable species as `{"label", "index", "probability"}`, and
        `lookalike`, the species the top one's photos were most taken for in the run's held-out photos (None
        where the card has no look-alikes)."""
        out = torch.from_numpy(self.logits(images)).double()
        no_bird: torch.Tensor | None
        if self.gated:
            probabilities, no_bird = out[:, :-1].softmax(1), out[:, -1]
        else:
            probabilities = out.softmax(1)
            no_bird = probabilities[:, self.no_bird_output] if self.no_bird_output is not None else None
        species = probabilities.clone()
        if self.no_bird_output is not None:
            species[:, self.no_bird_output] = -1.0  # never among the species
        top = species.topk(min(k, self.species), dim=1)
        threshold = self.card.gate_threshold
        results = []
        for n, (ps, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            bird = None if no_bird is None or threshold is None else bool(no_bird[n] < threshold)
            answered = answer(probabilities[n], self.class_names, self.levels, self.card.answer_threshold)
            results.append(
                {
                    "bird": bird,
                    "no_bird_probability": None if no_bird is None else float(no_bird[n]),
                    "answer": None if bird is False else dataclasses.asdict(answered),
                    "top": [{"label": self.class_names[i], "index": int(i), "probability": p} for p, i in zip(ps, idx)],
                    "lookalike": self.lookalike(idx[0]) if bird is not False else None,
                }
            )
        return results
