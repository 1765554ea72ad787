"""One trained run as every command sees it: `RunView`.

As torchvision's `Weights` carries the transforms its weights expect, a `RunView` carries what a run's model
needs to be looked at: the run record (data root, classes, validation split), the class names, the
normalisation, the training resolution and the test-time inference (test resolution, flip averaging, look
twice: `mobilenet.tta.Inference`). `train.py` builds it from the run it trains; `evaluate.py`, `predict.py`,
`serve.py`, `export.py`, `deploy.quantize` and the bench studies build it from a checkpoint
(`RunView.of_checkpoint`), so each of them reads the data root, the splits and the test view from one place.
`evaluate.py --test-resolution/--test-hflip/--look-twice` change the inference (`with_inference`), with the
same names and meanings as `train.py`'s options.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cli import UsageError
from data.cub import CUB200
from data.transforms import Compose, Normalize, eval_transform
from mobilenet.tta import Inference
from training.config import RunConfig


@dataclass(frozen=True)
class RunView:
    run: RunConfig
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_resolution: int
    inference: Inference

    @classmethod
    def of_run(cls, run: RunConfig, data_config: dict, class_names: list[str]) -> "RunView":
        """The view of a run being trained: `run` resolved, its model's `data_config` (mean, std)."""
        mean, std = tuple(data_config["mean"]), tuple(data_config["std"])
        return cls(run, tuple(class_names), mean, std, run.resolution, run.inference)

    @classmethod
    def of_checkpoint(cls, info: dict) -> "RunView":
        """The view recorded in a checkpoint (`mobilenet.load_checkpoint`'s info)."""
        data = info["data_config"]
        return cls(
            RunConfig.from_dict(info.get("config") or {}),
            tuple(info["class_names"]),
            tuple(data["mean"]),
            tuple(data["std"]),
            int(data["resolution"]),
            Inference.of_checkpoint(info),
        )

    def with_inference(
        self, *, resolution: int | None = None, hflip: bool | None = None, look_twice: bool | None = None
    ) -> "RunView":
        """This view with the given test-time choices changed (None: as the run recorded)."""
        recorded = self.inference
        inference = Inference(
            resolution or recorded.resolution,
            recorded.hflip if hflip is None else hflip,
            recorded.look_twice if look_twice is None else look_twice,
        )
        return dataclasses.replace(self, inference=inference)

    def data_root(self, given: str | Path | None = None, *, flag: str = "--data-root") -> Path:
        """`given`, else the root the run trained on; UsageError naming `flag` when it is not a CUB root here."""
        root = str(given or self.run.data_root)
        if not root or not (Path(root) / "images.txt").is_file():
            where = (
                f"{root!r} is not a CUB root (no images.txt)" if given else f"the run's data root {root!r} is not here"
            )
            raise UsageError(f"{where}: give {flag}")
        return Path(root)

    def dataset(
        self, split: str, transform: Callable | None, *, data_root: str | Path | None = None, crop: str | None = None
    ) -> CUB200:
        """The run's `split` ("train", "val" or "test") of `data_root` (default: the run's), its classes and
        validation images as the run had them; UsageError for "val" of a run that held none out."""
        if split == "val" and self.run.val_fraction == 0:
            raise UsageError(
                "--split val: the run has no validation split (a refit trains on every training image); "
                "use --split test, or train with --val-fraction 0.1"
            )
        return self.run.dataset(split, transform, data_root=str(self.data_root(data_root)), crop=crop)

    def normalize(self) -> Normalize:
        """The input scaling the weights expect, on [0, 1] floats."""
        return Normalize(self.mean, self.std)

    def eval_transform(self, resolution: int | None = None) -> Compose:
        """uint8 image -> the normalised centre view at the test resolution (or `resolution`)."""
        return eval_transform(resolution or self.inference.resolution, mean=self.mean, std=self.std)
