"""The run record: every option of a training run, resolved once from the flags and the recipe.

`RunConfig` is what `train.py` trains with, what it saves as `config.json` and inside every checkpoint, and
what `evaluate.py`, `export.py` and `deploy.quantize` read back to rebuild the run's data
(`RunConfig.dataset`). `resolve_config` is a pure function: flags (an argparse namespace or a dict), the data
root, and the architecture facts of the `--pretrained` file in; a frozen `RunConfig` or a `UsageError` out.

Defaults are recipes (`RECIPES`): options left unset on the command line take the recipe's value. The two
recipes share `COMMON`; the built-in generated birds change three values of the from-scratch recipe.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from data.cub import CUB200, fold_count
from data.loaders import parse_classes
from mobilenet.tta import Inference
from training.optim import OPTIMIZERS
from training.schedules import SCHEDULES, Schedule

# Values both recipes share (batch 32 per process, SGD, label smoothing, random-resized crops of 35-100%).
COMMON: dict[str, Any] = dict(
    batch_size=32,
    optimizer="sgd",
    weight_decay=5e-5,
    label_smoothing=0.1,
    head_lr_mult=1.0,
    scale_min=0.35,
    resolution=224,
    test_scale=1.0,
    test_hflip=False,
    look_twice=False,
    transplant_head=True,  # a start whose labels the species map names (data/cub200_inat_birds.tsv)
)
# Validation images carved from each class's training images (seeded by --seed), for choosing best.pt. CUB
# has about 30 training images per class: 10% holds out 3 per class, 599 images on full CUB (standard error
# of a top-1 near 75%: 1.8 points) and 60 on cub20 (near 90%: 3.9 points). That ranks checkpoints coarsely
# but catches a bad epoch. With --val-fraction 0 there is no validation and best.pt is the last epoch.
VAL_FRACTION = 0.1
# A refit has no validation to run each epoch; its test curve is drawn every 5 epochs (and after the last),
# because the fine-tuning recipe's look twice + flip makes each test evaluation four passes (about a minute on
# cub20 on 2 cores, 20 minutes over a 20-epoch run if done every epoch).
EVAL_EVERY_WITHOUT_VALIDATION = 5
RECIPES: dict[str, dict[str, Any]] = {
    "scratch": {**COMMON, "epochs": 30, "lr": 0.05, "warmup_epochs": 2.0, "val_fraction": VAL_FRACTION},
    # Fine-tuning refits: trained on every training image, the last epoch kept, and tested by looking twice
    # with flip averaging. Both chosen by 5-fold cross-validation on cub20 (`python -m bench.crossval`): pooled
    # over the 600 out-of-fold images the last epoch validates within 2 images of the best one (so holding
    # images out would only cost training data), and look twice + flip corrects 20 images one plain pass gets
    # wrong against 7 the other way (exact McNemar p = 0.019), at 4 passes' cost.
    "finetune": {
        **COMMON,
        "epochs": 20,
        "lr": 0.005,
        "warmup_epochs": 1.0,
        "val_fraction": 0.0,
        "test_hflip": True,
        "look_twice": True,
    },
}
# The built-in generated birds are drawn at 128 px: from scratch at 80 px (evaluated on the centre 80 of 91)
# for 14 epochs (about 4 minutes on 2 CPU cores), with mild crops that keep the whole bird in view.
RECIPES["builtin"] = {**RECIPES["scratch"], "resolution": 80, "epochs": 14, "scale_min": 0.8}
# Fine-tuning from the bird expert (`--pretrained inat-birds` or its file, recognised by its SHA-256): a fresh
# head and one plain pass, chosen on fold 0 of a 3-fold split of cub20's training images
# (bench/studies/crossval_cub20_bird_{default,fresh}_fold0.md; the decision record is docs/bird-expert.md).
RECIPES["finetune-birds"] = {**RECIPES["finetune"], "transplant_head": False, "test_hflip": False, "look_twice": False}
RECIPE_KEYS = tuple(RECIPES["scratch"])


class UsageError(ValueError):
    """An invalid option or input, for every command: reported as one line naming the flag or file, before any
    work."""


@dataclass(frozen=True)
class RunConfig:
    """A training run, resolved: no value here is None unless None means "not used" (`pretrained`, ...)."""

    # model
    arch: str = "v2"
    width: float = 1.0
    resolution: int = 224
    dropout: float = 0.2
    pretrained: str | None = None
    transplant_head: bool = True
    freeze_epochs: int = 0
    calibration_batches: int = 10
    normalization: str = "auto"
    # data
    data_root: str = ""
    builtin_data: bool = False
    crop: str = "none"
    class_ids: tuple[int, ...] | None = None
    val_fraction: float = VAL_FRACTION
    val_fold: int | None = None
    workers: int = 2
    cache: bool = False
    scale_min: float = 0.35
    scale_max: float = 1.0
    hflip: float = 0.5
    color_jitter: float = 0.0
    # optimisation
    recipe: str = "scratch"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 0.05
    head_lr_mult: float = 1.0
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-5
    no_decay_bn_bias: bool = True
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    ema: float = 0.0
    grad_clip: float = 0.0
    amp: str = "none"
    channels_last: bool = False
    # distillation (training/distill.py)
    teacher: str | None = None
    distill_temperature: float = 4.0
    distill_weight: float = 0.9
    # test time (mobilenet/tta.py): how val/test are evaluated, and how evaluate/predict/serve/export apply the model
    test_scale: float = 1.0  # test resolution = round(resolution * test_scale)
    test_hflip: bool = False
    look_twice: bool = False
    # schedule
    schedule: str = "cosine"
    warmup_epochs: float = 2.0
    min_lr_factor: float = 0.0
    step_size: int = 30
    gamma: float = 0.1
    milestones: tuple[int, ...] = ()
    # run
    seed: int = 0
    device: str = "auto"
    out: str = ""
    eval_every: int = 1
    no_malloc_tuning: bool = False
    no_progress: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: tuples become lists."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "RunConfig":
        """The record saved in a checkpoint or `config.json` (keys of older versions are ignored)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in known}
        kept.setdefault("val_fraction", 0.0)  # records from before validation splits had none
        for key in ("class_ids", "milestones"):
            if kept.get(key) is not None:
                kept[key] = tuple(kept[key])
        return cls(**kept)

    def lr_schedule(self, steps_per_epoch: int) -> Schedule:
        """This run's learning-rate schedule: a factor of `lr` for every optimizer step."""
        return Schedule(
            self.schedule,
            self.epochs,
            steps_per_epoch,
            self.warmup_epochs,
            min_factor=self.min_lr_factor,
            step_size=self.step_size,
            gamma=self.gamma,
            milestones=list(self.milestones),
        )

    def lr_per_step(self, steps_per_epoch: int) -> list[float]:
        """The learning rate of every optimizer step of the run, warm-up included (for plots)."""
        schedule = self.lr_schedule(steps_per_epoch)
        return [self.lr * schedule.factor(step) for step in range(self.epochs * steps_per_epoch)]

    @property
    def inference(self) -> Inference:
        """How this run's model is applied to a test image (evaluation each epoch, and every tool after)."""
        return Inference.of_run(self.resolution, dataclasses.asdict(self))

    def dataset(
        self, split: str, transform: Callable | None, *, data_root: str | None = None, crop: str | None = None
    ) -> CUB200:
        """This run's `split` ("train", "val" or "test"): its classes, read from `data_root` (default: the run's),
        each image cropped as the run did (or as `crop` says) and passed through `transform`."""
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


def resolve_config(
    flags: Mapping[str, Any],
    *,
    data_root: str,
    builtin_data: bool,
    pretrained_model: Mapping[str, Any] | None = None,
    pretrained_resolution: int | None = None,
    bird_start: bool = False,
) -> RunConfig:
    """The run record from the command line's values (None = unset), the data root, and, with `--pretrained`,
    the imported model's config (`arch`, `width_mult`) and the file's input resolution; `bird_start` when that
    file is the iNaturalist-birds expert (its own fine-tuning recipe). Raises UsageError."""
    if flags.get("pretrained"):
        recipe_name = "finetune-birds" if bird_start else "finetune"
    else:
        recipe_name = "builtin" if builtin_data else "scratch"
    values = {k: v for k, v in flags.items() if k in {f.name for f in dataclasses.fields(RunConfig)}}
    for key, default in RECIPES[recipe_name].items():
        if values.get(key) is None and key != "resolution":
            values[key] = default
    if pretrained_model is not None:
        for flag, key, name in (("--arch", "arch", "arch"), ("--width", "width_mult", "width")):
            wanted = values.get(name)
            if wanted is not None and wanted != pretrained_model[key]:
                raise UsageError(
                    f"{flag} {wanted} does not match --pretrained {flags['pretrained']} ({key} {pretrained_model[key]})"
                )
        values["arch"], values["width"] = pretrained_model["arch"], pretrained_model["width_mult"]
    for key, default in (("arch", "v2"), ("width", 1.0)):
        if values.get(key) is None:
            values[key] = default
    if values.get("resolution") is None:
        values["resolution"] = pretrained_resolution or RECIPES[recipe_name]["resolution"]
    if values.get("eval_every") is None:  # without a validation split, evaluating only draws the test curve
        values["eval_every"] = 1 if values["val_fraction"] > 0 else EVAL_EVERY_WITHOUT_VALIDATION
    try:
        class_ids = parse_classes(flags.get("classes"))
    except ValueError as e:
        raise UsageError(str(e)) from None
    values.update(
        recipe=recipe_name,
        data_root=str(data_root),
        builtin_data=builtin_data,
        class_ids=tuple(class_ids) if class_ids else None,
        milestones=tuple(values.get("milestones") or ()),
    )
    if not values.get("out"):
        values["out"] = f"runs/{values['arch']}-{values['width']:g}-{values['resolution']}"
    values = {k: v for k, v in values.items() if v is not None}
    config = RunConfig(**values)
    check(config)
    return config


def check(c: RunConfig) -> None:
    """Every value in range, or a UsageError naming the flag."""
    rules = [
        (c.arch in ("v1", "v2"), "--arch", "must be v1 or v2", c.arch),
        (math.isfinite(c.lr) and c.lr > 0, "--lr", "must be > 0", c.lr),
        (c.epochs >= 0, "--epochs", "must be >= 0 (0: evaluate the start only)", c.epochs),
        (c.batch_size > 0, "--batch-size", "must be > 0", c.batch_size),
        (0 < c.width <= 4, "--width", "must be in (0, 4]", c.width),
        (c.resolution >= 32, "--resolution", "must be at least 32", c.resolution),
        (0 <= c.dropout < 1, "--dropout", "must be in [0, 1)", c.dropout),
        (c.weight_decay >= 0, "--weight-decay", "must be >= 0", c.weight_decay),
        (0 <= c.label_smoothing < 1, "--label-smoothing", "must be in [0, 1)", c.label_smoothing),
        (
            0 < c.scale_min <= c.scale_max <= 1,
            "--scale-min/--scale-max",
            "must satisfy 0 < min <= max <= 1",
            (c.scale_min, c.scale_max),
        ),
        (c.schedule in SCHEDULES, "--schedule", f"must be one of {', '.join(SCHEDULES)}", c.schedule),
        (c.optimizer in OPTIMIZERS, "--optimizer", f"must be one of {', '.join(OPTIMIZERS)}", c.optimizer),
        (c.workers >= 0, "--workers", "must be >= 0", c.workers),
        (c.ema == 0 or 0 < c.ema < 1, "--ema", "must be in (0, 1)", c.ema),
        (c.eval_every > 0, "--eval-every", "must be > 0", c.eval_every),
        (c.freeze_epochs >= 0, "--freeze-epochs", "must be >= 0", c.freeze_epochs),
        (c.warmup_epochs >= 0, "--warmup-epochs", "must be >= 0", c.warmup_epochs),
        (0 <= c.val_fraction < 1, "--val-fraction", "must be in [0, 1)", c.val_fraction),
        (0.5 <= c.test_scale <= 4, "--test-scale", "must be in [0.5, 4]", c.test_scale),
        (c.distill_temperature > 0, "--distill-temperature", "must be > 0", c.distill_temperature),
        (0 <= c.distill_weight <= 1, "--distill-weight", "must be in [0, 1]", c.distill_weight),
    ]
    for ok, flag, rule, value in rules:
        if not ok:
            raise UsageError(f"{flag} {rule}, got {value}")
    if c.val_fold is not None:
        try:
            fold_count(c.val_fraction, c.val_fold)
        except ValueError as error:
            raise UsageError(f"--val-fold {c.val_fold} with --val-fraction {c.val_fraction:g}: {error}") from None


# What may differ between a run and its `--resume`: where and how fast it runs, not what it computes.
RESUMABLE_CHANGES = {"workers", "device", "cache", "no_progress", "no_malloc_tuning", "eval_every", "out", "data_root"}


def check_resume(saved: RunConfig, wanted: RunConfig, path: str) -> None:
    """UsageError naming the first flag whose value differs from the run being resumed."""
    for field in dataclasses.fields(RunConfig):
        name = field.name
        if name in RESUMABLE_CHANGES:
            continue
        before, now = getattr(saved, name), getattr(wanted, name)
        if before != now:
            flag = "--classes" if name == "class_ids" else "--" + name.replace("_", "-")
            raise UsageError(
                f"--resume {path}: the run has {flag} {_show(before)}, this command {_show(now)}; "
                "a resumed run must be the same run (give the options it was started with)"
            )


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "(none)"
    return str(value)
