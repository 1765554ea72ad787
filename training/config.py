"""The run record: every option of a training run, declared once and resolved once.

Each field of `RunConfig` is one option: its type, its default (the from-scratch recipe's value), its help and
its `--help` group, and whether a `--resume` may change it. `train.py`'s parser, `--help`, the `--config` file
reader, the range checks and the resume rules are all made from these declarations (`add_options`,
`check`, `check_resume`). Recipes (`RECIPES`) are overlays: the values a recipe changes. `resolve_config` is
the one place a run is resolved, a pure function: the command line's values (None = unset), the data root,
and the facts of the `--pretrained` file in; a frozen `RunConfig` or a `UsageError` out. `RunConfig` is what
`train.py` trains with, and what it saves as `config.json` and inside every checkpoint, without the facts
the model's config and card hold (`stored`: one home for each fact); the other commands read it back with
`RunConfig.of_checkpoint` and its data with `RunConfig.dataset`. The run makes its model's card once (`card`).
"""

import argparse
import dataclasses
import math
import reprlib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli import UsageError
from data.cub import CUB200, fold_count
from data.loaders import parse_classes
from mobilenet.card import ModelCard
from mobilenet.tta import Inference
from training.optim import OPTIMIZERS
from training.schedules import SCHEDULES, Schedule


def option(default: Any, help: str, group: str, *, choices: tuple = (), resumable: bool = False, **more: Any) -> Any:
    """A `RunConfig` field that is a `train.py` option. `resumable`: a `--resume` may change it (where and how
    fast a run runs, not what it computes). `more`: `flag` (when not `--name-of-the-field`), `parse` (text to
    value, for `--classes`), `check` (value -> ok) with `rule` (what the check asks), `default_text`."""
    return dataclasses.field(
        default=default, metadata=dict(help=help, group=group, choices=choices, resumable=resumable, **more)
    )


PROBABILITY: dict[str, Any] = dict(check=lambda v: 0 <= v <= 1, rule="in [0, 1]")  # an option's range check


def _fraction(text: str) -> float:
    """A number, or a fraction as docs write it: `0.2`, `1/3`."""
    numerator, slash, denominator = text.partition("/")
    try:
        return float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number or a fraction such as 1/3, got {text!r}") from None


def _class_ids(text: str) -> tuple[int, ...] | None:
    ids = parse_classes(text)
    return tuple(ids) if ids else None


GROUPS = ("model", "data", "optimisation", "distillation", "test time", "schedule", "run")
GROUP_TITLES = {"test time": "test time (how val/test are evaluated; evaluate/predict/serve/export follow)"}
# Validation images carved from each class's training images (seeded by --seed), for choosing best.pt
# (docs/training.md: what 10% holds out on CUB and cub20). 0: no validation, best.pt is the last epoch.
VAL_FRACTION = 0.1
# A refit has no validation to run each epoch; its test curve is drawn every 5 epochs (and after the last).
EVAL_EVERY_WITHOUT_VALIDATION = 5
# Batches of training images on which an imported .tflite's batch norm is re-estimated (its BN is folded).
CALIBRATION_BATCHES = 10


@dataclass(frozen=True)
class RunConfig:
    """A training run, resolved: no value here is None unless None means "not used" (`pretrained`, ...).
    The defaults are the from-scratch recipe; `RECIPES` lists what the other recipes change."""

    # model
    arch: str = option(
        "v2", "architecture", "model", choices=("v1", "v2"), default_text="v2, or the --pretrained file's"
    )
    width: float = option(
        1.0,
        "width multiplier",
        "model",
        check=lambda v: 0 < v <= 4,
        rule="in (0, 4]",
        default_text="1.0, or the --pretrained file's",
    )
    resolution: int = option(224, "training input size", "model", check=lambda v: v >= 32, rule="at least 32")
    dropout: float = option(0.2, "dropout before the classifier", "model", check=lambda v: 0 <= v < 1, rule="in [0, 1)")
    pretrained: str | None = option(
        None,
        "a .tflite / torchvision .pth / timm .pth or .safetensors file, or 'imagenet' (torchvision's V2) or "
        "'inat-birds' (Google's V2 trained on 964 iNaturalist bird species)",
        "model",
        default_text="none, from scratch",
    )
    transplant_head: bool = option(
        False,
        "start each class that the --pretrained file's labels name (data/cub200_inat_birds.tsv) from that "
        "species' row of the file's head; the other classes start fresh (needs the file's labels beside it)",
        "model",
    )
    probe_head: bool = option(
        False,
        "start the head from a linear probe: logistic regression on the --pretrained model's frozen features of "
        "the training images (training/probe.py; with --epochs 0, the probe itself; then fine-tuning is LP-FT)",
        "model",
    )
    freeze_epochs: int = option(
        0, "train only the classifier for this many epochs first", "model", check=lambda v: v >= 0, rule=">= 0"
    )
    # data
    data_root: str = option(
        "",
        "CUB root",
        "data",
        resumable=True,
        default_text="data/CUB_200_2011 if present, else the built-in generated set",
    )
    crop: str = option("none", "crop images to their bounding box", "data", choices=("none", "bbox"))
    class_ids: tuple[int, ...] | None = option(
        None, "class ids to use, e.g. 1-20 or 1,5,9-12", "data", flag="--classes", parse=_class_ids, default_text="all"
    )
    val_fraction: float = option(
        VAL_FRACTION,
        "fraction of each class's training images held out to choose best.pt (0: none, best.pt = last epoch; "
        "1/3 is one third)",
        "data",
        parse=_fraction,
        check=lambda v: 0 <= v < 1,
        rule="in [0, 1)",
    )
    val_fold: int | None = option(
        None,
        "hold out the K-th of the 1/val-fraction disjoint folds instead (k-fold cross-validation)",
        "data",
        default_text="none",
    )
    workers: int = option(2, "data-loading processes", "data", resumable=True, check=lambda v: v >= 0, rule=">= 0")
    # Not resumable: cached photos are resized once to the cache size, so a crop of them is not the same pixels
    # as the same crop of the JPEG (tests/test_prepare.py); a resume must see the pixels the run saw.
    cache: bool = option(False, "use (and build if needed) the packed uint8 cache", "data")
    cache_dir: str = option(
        "",
        "folder of the packed cache (for a read-only checkout)",
        "data",
        resumable=True,
        default_text=".cache/packed in the checkout",
    )
    device_pipeline: bool | None = option(
        None,
        "with --cache: crop, flip and normalise training batches on the training device (training/device_pipeline.py)",
        "data",
        resumable=True,
        default_text="on with --cache unless --color-jitter",
    )
    scale_min: float = option(0.35, "smallest random-crop area fraction", "data")
    scale_max: float = option(1.0, "largest random-crop area fraction", "data")
    hflip: float = option(0.5, "training: horizontal flip probability", "data", **PROBABILITY)
    color_jitter: float = option(
        0.0, "brightness/contrast/saturation jitter strength", "data", check=lambda v: v >= 0, rule=">= 0"
    )
    # optimisation
    epochs: int = option(30, "epochs", "optimisation", check=lambda v: v >= 0, rule=">= 0 (0: evaluate the start only)")
    batch_size: int = option(32, "images per step and process", "optimisation", check=lambda v: v > 0, rule="> 0")
    lr: float = option(
        0.05, "base learning rate", "optimisation", check=lambda v: math.isfinite(v) and v > 0, rule="> 0"
    )
    head_lr_mult: float = option(1.0, "classifier lr multiplier", "optimisation", check=lambda v: v >= 0, rule=">= 0")
    optimizer: str = option("sgd", "optimizer", "optimisation", choices=OPTIMIZERS)
    momentum: float = option(
        0.9, "momentum (SGD, RMSprop)", "optimisation", check=lambda v: 0 <= v < 1, rule="in [0, 1)"
    )
    weight_decay: float = option(5e-5, "weight decay", "optimisation", check=lambda v: v >= 0, rule=">= 0")
    decay_bn_bias: bool = option(False, "weight decay on BN, biases and depthwise kernels too", "optimisation")
    label_smoothing: float = option(
        0.1, "label smoothing", "optimisation", check=lambda v: 0 <= v < 1, rule="in [0, 1)"
    )
    mixup: float = option(0.0, "mixup alpha (0: off)", "optimisation", check=lambda v: v >= 0, rule=">= 0")
    cutmix: float = option(0.0, "cutmix alpha (0: off)", "optimisation", check=lambda v: v >= 0, rule=">= 0")
    ema: float = option(
        0.0,
        "EMA decay of the weights, e.g. 0.999 (0: off)",
        "optimisation",
        check=lambda v: v == 0 or 0 < v < 1,
        rule="in (0, 1)",
    )
    grad_clip: float = option(
        0.0, "clip the gradient norm (0: off)", "optimisation", check=lambda v: v >= 0, rule=">= 0"
    )
    amp: str = option(
        "auto",
        "mixed precision (fp16 on CUDA only)",
        "optimisation",
        choices=("auto", "none", "bf16", "fp16"),
        default_text="auto: bf16 on CUDA, none elsewhere",
    )
    channels_last: bool | None = option(
        None, "NHWC memory format", "optimisation", default_text="on CUDA and CPU (not MPS)"
    )
    compile: bool = option(False, "torch.compile the model for training (the first steps compile it)", "optimisation")
    # distillation (training/distill.py)
    teacher: str | None = option(None, "a train.py checkpoint to distil from", "distillation", default_text="none")
    distill_temperature: float = option(
        4.0, "softmax temperature of the soft targets", "distillation", check=lambda v: v > 0, rule="> 0"
    )
    distill_weight: float = option(0.9, "weight of the soft-target loss (1: no labels)", "distillation", **PROBABILITY)
    # test time (mobilenet/tta.py): how val/test are evaluated, and how evaluate/predict/serve/export apply the model
    test_scale: float = option(
        1.0,
        "test resolution = resolution x this (FixRes)",
        "test time",
        check=lambda v: 0.5 <= v <= 4,
        rule="in [0.5, 4]",
    )
    test_hflip: bool = option(False, "average with the mirror image", "test time")
    look_twice: bool = option(False, "second pass on the object cropped from the first pass's features", "test time")
    answer_threshold: float = option(
        0.0,
        "the probability the species needs, else its genus, family or order (deploy/answer.py)",
        "test time",
        **PROBABILITY,
    )
    # schedule
    schedule: str = option("cosine", "learning-rate schedule", "schedule", choices=SCHEDULES)
    warmup_epochs: float = option(2.0, "linear warm-up", "schedule", check=lambda v: v >= 0, rule=">= 0")
    # run
    seed: int = option(
        0,
        "random seed (initial weights, validation split, every epoch's draws)",
        "run",
        check=lambda v: 0 <= v < 2**31,
        rule="in [0, 2^31)",
    )
    device: str = option("auto", "device", "run", choices=("auto", "cpu", "cuda", "mps"), resumable=True)
    out: str = option("", "run folder", "run", resumable=True, default_text="runs/<arch>-<width>-<resolution>")
    eval_every: int = option(
        1,
        "evaluate every N epochs and after the last",
        "run",
        resumable=True,
        check=lambda v: v > 0,
        rule="> 0",
        default_text=f"1 with a validation split, {EVAL_EVERY_WITHOUT_VALIDATION} without",
    )
    malloc_tuning: bool = option(
        True, "keep freed memory in glibc's malloc (faster steps on CPU)", "run", resumable=True
    )
    progress: bool = option(
        True, "progress bars or progress lines (the per-epoch summary lines stay)", "run", resumable=True
    )
    # resolved, not options
    recipe: str = "scratch"
    builtin_data: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        """The record saved in a checkpoint or `config.json` (keys of older versions are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        kept.setdefault("val_fraction", 0.0)  # records from before validation splits had none
        if kept.get("class_ids") is not None:
            kept["class_ids"] = tuple(kept["class_ids"])
        return cls(**kept)

    def lr_schedule(self, steps_per_epoch: int) -> Schedule:
        """This run's learning-rate schedule: a factor of `lr` for every optimizer step."""
        return Schedule(self.schedule, self.epochs, steps_per_epoch, self.warmup_epochs)

    def lr_per_step(self, steps_per_epoch: int) -> list[float]:
        """The learning rate of every optimizer step of the run, warm-up included (for plots)."""
        schedule = self.lr_schedule(steps_per_epoch)
        return [self.lr * schedule.factor(step) for step in range(self.epochs * steps_per_epoch)]

    @property
    def inference(self) -> Inference:
        """How this run's model is applied to a test image (evaluation each epoch, and every tool after)."""
        return Inference(round(self.resolution * self.test_scale), self.test_hflip, self.look_twice)

    def card(self, class_names: list[str], *, mean: tuple, std: tuple, source: str = "") -> ModelCard:
        """The card of the model this run trains: its classes, its start's normalization, its resolution and
        test-time inference."""
        return ModelCard(
            tuple(class_names),
            tuple(mean),
            tuple(std),
            self.resolution,
            self.inference,
            source,
            answer_threshold=self.answer_threshold,
        )

    def stored(self) -> dict[str, Any]:
        """The record as checkpoints and `config.json` keep it: without the facts whose home is the model's
        config or card (`MODEL_FACTS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in MODEL_FACTS}

    @classmethod
    def of_checkpoint(cls, info: Mapping[str, Any]) -> "RunConfig":
        """The whole record of the run that wrote a checkpoint (`load_checkpoint`'s info, or a raw checkpoint):
        its stored record, with the model's facts from the model's config and card."""
        model, card = info["model_config"], info["card"]
        facts = dict(arch=model["arch"], width=model["width_mult"], resolution=card["resolution"])
        facts.update(test_hflip=card["inference"]["hflip"], look_twice=card["inference"]["look_twice"])
        facts.update(answer_threshold=card.get("answer_threshold", 0.0))
        if "dropout" in model:
            facts["dropout"] = model["dropout"]
        return cls.from_dict({**(info.get("config") or {}), **facts})

    def data_root_here(self, given: str | Path | None = None, *, flag: str = "--data-root") -> Path:
        """`given`, else the root the run trained on; UsageError naming `flag` when it is not a CUB root here."""
        root = str(given or self.data_root)
        if not root or not (Path(root) / "images.txt").is_file():
            where = (
                f"{root!r} is not a CUB root (no images.txt)" if given else f"the run's data root {root!r} is not here"
            )
            raise UsageError(f"{where}: give {flag}")
        return Path(root)

    def dataset(
        self, split: str, transform: Callable | None, *, data_root: str | Path | None = None, crop: str | None = None
    ) -> CUB200:
        """This run's `split` ("train", "val" or "test"): its classes, read from `data_root` (default: the run's),
        each image cropped as the run did (or as `crop` says) and passed through `transform`; UsageError for
        "val" of a run that held none out."""
        if split == "val" and self.val_fraction == 0:
            raise UsageError(
                "--split val: the run has no validation split (a refit trains on every training image); "
                "use --split test, or train with --val-fraction 0.1"
            )
        classes = list(self.class_ids) if self.class_ids else None
        return CUB200(
            data_root or self.data_root,
            split,
            transform,
            crop=crop or self.crop,
            classes=classes,
            val_fraction=self.val_fraction,
            val_seed=self.seed,
            val_fold=self.val_fold,
        )


# The options whose home is the model's config (architecture) or its card (input and test-time inference).
MODEL_FACTS = ("arch", "width", "dropout", "resolution", "test_hflip", "look_twice", "answer_threshold")

OPTIONS = {f.name: f for f in dataclasses.fields(RunConfig) if "help" in f.metadata}
_TYPES = typing.get_type_hints(RunConfig)

# The recipes, as the values each changes from the defaults above (the from-scratch recipe).
# Fine-tuning refits: trained on every training image, the last epoch kept, and tested by looking twice with
# flip averaging; both chosen by 5-fold cross-validation on cub20 (docs/results.md, `python -m bench.crossval`).
FINETUNE = dict(epochs=20, lr=0.005, warmup_epochs=1.0, val_fraction=0.0, test_hflip=True, look_twice=True)
RECIPES: dict[str, dict[str, Any]] = {
    "scratch": {},
    # The built-in generated birds are drawn at 128 px: at 80 px, with mild crops that keep the whole bird.
    "builtin": dict(resolution=80, epochs=14, scale_min=0.8),
    "finetune": FINETUNE,
    # The bird expert (`--pretrained inat-birds` or its file, known by its SHA-256): a fresh head and one plain
    # pass, chosen by 3-fold cross-validation on cub20's training images (docs/bird-expert.md).
    "finetune-birds": {**FINETUNE, "test_hflip": False, "look_twice": False},
}


def flag_of(name: str) -> str:
    """The command-line flag of the option `name`."""
    return OPTIONS[name].metadata.get("flag") or "--" + name.replace("_", "-")


def default_text(name: str) -> str:
    """What `--help` says an option defaults to: its value, and where a recipe changes it, the recipe's."""
    meta, default = OPTIONS[name].metadata, OPTIONS[name].default
    if "default_text" in meta:
        return meta["default_text"]
    shown = str(default)
    finetune, birds, builtin = (RECIPES[r].get(name, default) for r in ("finetune", "finetune-birds", "builtin"))
    if finetune != default:
        shown += f" from scratch, {finetune} with --pretrained"
    if birds != finetune:
        shown += f" ({birds} from inat-birds)"
    if builtin != default:
        shown += f"; {builtin} from scratch on the built-in set"
    if name == "resolution":
        shown += ", or the --pretrained file's"
    return shown


def add_options(parser: argparse.ArgumentParser) -> None:
    """Every option of `RunConfig`, in its group; each defaults to None (unset: the recipe decides)."""
    groups = {g: parser.add_argument_group(GROUP_TITLES.get(g, g)) for g in GROUPS}
    for name, f in OPTIONS.items():
        meta = f.metadata
        kind = _value_type(name)
        kwargs: dict[str, Any] = dict(dest=name, default=None, help=f"{meta['help']} (default: {default_text(name)})")
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _argparse_type(meta.get("parse") or kind, flag_of(name))
            if meta["choices"]:
                kwargs["choices"] = meta["choices"]
            else:
                kwargs["metavar"] = flag_of(name).lstrip("-").replace("-", "_").upper()
        groups[meta["group"]].add_argument(flag_of(name), **kwargs)


def _value_type(name: str) -> type:
    """The option's value type: `int | None` gives `int`, `tuple[int, ...] | None` gives `tuple`."""
    hint = _TYPES[name]
    if typing.get_origin(hint) in (typing.Union, type(int | None)):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def _argparse_type(convert: Callable, flag: str) -> Callable:
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(f"{flag}: ")) from None

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def option_names_by_key() -> dict[str, str]:
    """Config-file keys (an option's field name or its flag's name, `-` or `_`) to field names."""
    keys = {}
    for name in OPTIONS:
        for key in (name, flag_of(name).lstrip("-")):
            keys[key] = keys[key.replace("-", "_")] = name
    return keys


def resolve_config(
    flags: Mapping[str, Any],
    *,
    data_root: str,
    builtin_data: bool,
    pretrained_model: Mapping[str, Any] | None = None,
    pretrained_resolution: int | None = None,
    bird_start: bool = False,
) -> RunConfig:
    """The run record from the command line's values (field names; None = unset), the data root, and, with
    `--pretrained`, the imported model's config (`arch`, `width_mult`) and the file's input resolution;
    `bird_start` when that file is the iNaturalist-birds expert (its own recipe). Raises UsageError."""
    if flags.get("pretrained"):
        recipe = "finetune-birds" if bird_start else "finetune"
    else:
        recipe = "builtin" if builtin_data else "scratch"
    given = {k: v for k, v in flags.items() if k in OPTIONS and v is not None}
    if isinstance(given.get("class_ids"), list):  # a --config file's list of ids
        given["class_ids"] = tuple(given["class_ids"])
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}  # the declarations' own, typed once
    values = {**defaults, **RECIPES[recipe], **given}
    if pretrained_model is not None:  # the start's architecture is a fact, not a default
        for name, key in (("arch", "arch"), ("width", "width_mult")):
            if name in given and given[name] != pretrained_model[key]:
                raise UsageError(
                    f"{flag_of(name)} {given[name]} does not match --pretrained {flags['pretrained']} "
                    f"({key} {pretrained_model[key]})"
                )
            values[name] = pretrained_model[key]
        if "resolution" not in given and pretrained_resolution:
            values["resolution"] = pretrained_resolution
    if given.get("probe_head"):  # the probe replaces the head; the transplant would be overwritten
        if given.get("transplant_head"):
            raise UsageError("--probe-head and --transplant-head both set the head; give one of them")
        values["transplant_head"] = False
    if "eval_every" not in given:  # without a validation split, evaluating only draws the test curve
        values["eval_every"] = 1 if values["val_fraction"] > 0 else EVAL_EVERY_WITHOUT_VALIDATION
    if "device_pipeline" not in given:  # the faster path wherever it can run (the loader's crops)
        values["device_pipeline"] = values["cache"] and values["color_jitter"] == 0
    values.update(recipe=recipe, data_root=str(data_root), builtin_data=builtin_data)
    if not values["out"]:
        values["out"] = f"runs/{values['arch']}-{values['width']:g}-{values['resolution']}"
    check_types(values)
    config = RunConfig(**values)
    check(config)
    return config


def precision(config: RunConfig, device_type: str) -> tuple[str, bool]:
    """`(amp, channels_last)` this run trains with on a `device_type` device ("auto": bf16 on CUDA; NHWC on CUDA
    and CPU, where oneDNN's depthwise and 1x1 kernels run faster in it: docs/results.md, training speed)."""
    amp = config.amp if config.amp != "auto" else ("bf16" if device_type == "cuda" else "none")
    channels_last = config.channels_last if config.channels_last is not None else device_type in ("cuda", "cpu")
    return amp, channels_last


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring = 2, 3, 3, 40


def check_types(values: Mapping[str, Any]) -> None:
    """UsageError naming the flag of a value of the wrong type (a `--config` file is not type-checked by argparse)."""
    for name, value in values.items():
        if name not in OPTIONS or value is None:
            continue
        kind = _value_type(name)
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            shown = _SHORT.repr(value)  # bounded: a --config alias bomb would repeat itself millions of times
            raise UsageError(f"{flag_of(name)} must be {kind.__name__}, got {shown}")


def check(c: RunConfig) -> None:
    """Every value in range, or a UsageError naming the flag."""
    for name, f in OPTIONS.items():
        value, meta = getattr(c, name), f.metadata
        if meta["choices"] and value not in meta["choices"]:
            raise UsageError(f"{flag_of(name)} must be one of {', '.join(meta['choices'])}, got {value}")
        if "check" in meta and value is not None and not meta["check"](value):
            raise UsageError(f"{flag_of(name)} must be {meta['rule']}, got {value}")
    if c.probe_head and not c.pretrained:
        raise UsageError("--probe-head needs --pretrained (it fits the head on the start's features)")
    if c.device_pipeline and not c.cache:
        raise UsageError("--device-pipeline needs --cache (it crops from the packed photos)")
    if c.device_pipeline and c.color_jitter > 0:
        raise UsageError("--device-pipeline does not do --color-jitter; leave one of them out")
    if not 0 < c.scale_min <= c.scale_max <= 1:
        raise UsageError(f"--scale-min/--scale-max must satisfy 0 < min <= max <= 1, got {(c.scale_min, c.scale_max)}")
    if c.val_fold is not None:
        try:
            fold_count(c.val_fraction, c.val_fold)
        except ValueError as error:
            raise UsageError(f"--val-fold {c.val_fold} with --val-fraction {c.val_fraction:g}: {error}") from None


def check_resume(saved: RunConfig, wanted: RunConfig, path: str) -> None:
    """UsageError naming the first flag whose value differs from the run being resumed (options marked
    `resumable` may differ)."""
    for f in dataclasses.fields(RunConfig):
        if f.metadata.get("resumable"):
            continue
        before, now = getattr(saved, f.name), getattr(wanted, f.name)
        if before != now:
            flag = flag_of(f.name) if f.name in OPTIONS else f.name
            raise UsageError(
                f"--resume {path}: the run has {flag} {_show(before)}, this command {_show(now)}; "
                "a resumed run must be the same run (give the options it was started with)"
            )


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "(none)"
    return str(value)
