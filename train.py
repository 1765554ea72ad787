"""Train MobileNetV1/V2 on CUB-200-2011, or on the built-in generated birds when no CUB is on disk.

    python train.py --arch v2 --width 0.75                      # from scratch
    python train.py --pretrained path/to/mobilenet_v2_1.0_224_quant.tflite --epochs 15
    torchrun --nproc_per_node=2 train.py --arch v1              # data-parallel, gloo on CPU / nccl on CUDA

Defaults are recipes (`training.config.RECIPES`): without `--pretrained` a from-scratch recipe, with it a
fine-tuning recipe; options left unset take the recipe's value, and `--help` lists them. The options are
resolved once into a `RunConfig`, saved in `runs/NAME/config.json` and every checkpoint. Each run writes
`config.json`, `metrics.jsonl`, `metrics.csv`, `last.pt` every epoch and `best.pt` at the best top-1 on a
validation split carved from the training images (`--val-fraction`); the test split is evaluated for the
curves and decides nothing.
Validation and test are evaluated with the run's test-time inference (`--test-scale`, `--test-hflip`,
`--look-twice`: `mobilenet.tta`), which evaluate.py, predict.py, serve.py and export.py then apply too.
`--teacher CHECKPOINT` distils a trained model into this one (`training.distill`).
`--resume` continues a run exactly where it stopped. The structure follows torchvision's reference
classification script: `get_args_parser`, `train_one_epoch`, `evaluate`, `main`.
"""

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from data.cub import CUB200, CUBFormatError, ImageDecodeError
from data.loaders import find_data_root, parse_classes
from mobilenet import create_model
from mobilenet.checkpoint import CheckpointError
from mobilenet.common import NORMALIZATIONS, MobileNetBase
from mobilenet.pretrained import (
    NAMED_STARTS,
    calibrate_batchnorm,
    is_bird_start,
    load_pretrained,
    species_head,
    transplant_head,
)
from mobilenet.tflite import TFLiteImportError
from training.config import RECIPE_KEYS, RECIPES, RunConfig, UsageError, resolve_config
from training.data import make_loaders
from training.distill import Teacher, distillation_loss
from training.ema import ModelEMA
from training.mixing import mix_batch, soft_target_loss
from training.optim import OPTIMIZERS, create_optimizer, parameter_groups
from training.progress import Progress
from training.runtime import (
    all_reduce_sum,
    average_buffers,
    close_distributed,
    init_distributed,
    rank_zero_logger,
    seed_everything,
    select_device,
    tune_malloc,
    wrap_distributed,
)
from training.schedules import SCHEDULES
from training.state import RunState

__all__ = ["UsageError", "evaluate", "get_args_parser", "main", "train_one_epoch"]


class RecipeHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default; for options whose default comes from a recipe, the recipes' values."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.dest in RECIPE_KEYS:
            scratch, finetune, builtin, birds = (
                RECIPES[name][action.dest] for name in ("scratch", "finetune", "builtin", "finetune-birds")
            )
            shown = f"{scratch}" if scratch == finetune else f"{scratch} from scratch, {finetune} with --pretrained"
            if birds != finetune:
                shown += f" ({birds} from inat-birds)"
            if builtin != scratch:
                shown += f"; {builtin} from scratch on the built-in set"
            extra = ", or the --pretrained file's" if action.dest == "resolution" else ""
            return f"{help_text} (default: {shown}{extra})"
        if action.default is None or action.default == argparse.SUPPRESS or "(default" in help_text:
            return help_text
        return super()._get_help_string(action) or help_text


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=RecipeHelpFormatter)
    m = p.add_argument_group("model")
    m.add_argument(
        "--arch", choices=["v1", "v2"], default=None, help="architecture (default: v2, or the --pretrained file's)"
    )
    m.add_argument(
        "--width", type=float, default=None, help="width multiplier (default: 1.0, or the --pretrained file's)"
    )
    m.add_argument("--resolution", type=int, default=None, help="input size")
    m.add_argument("--dropout", type=float, default=0.2, help="dropout before the classifier")
    m.add_argument(
        "--pretrained",
        default=None,
        help="a .tflite / torchvision .pth / timm .pth or .safetensors file, or 'imagenet' (torchvision's V2) or "
        "'inat-birds' (Google's V2 trained on 964 iNaturalist bird species) (default: none, from scratch)",
    )
    m.add_argument(
        "--transplant-head",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start each class that the --pretrained file's labels name (data/cub200_inat_birds.tsv) from that "
        "species' row of the file's head; the other classes start fresh",
    )
    m.add_argument("--freeze-epochs", type=int, default=0, help="train only the classifier for this many epochs first")
    m.add_argument(
        "--calibration-batches",
        type=int,
        default=10,
        help="batches of training images to re-estimate BN on after a .tflite import",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--data-root",
        default=None,
        help="CUB root (default: data/CUB_200_2011 if present, else the built-in generated set)",
    )
    d.add_argument("--crop", choices=["none", "bbox"], default="none", help="crop images to their bounding box")
    d.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="fraction of each class's training images held out to choose best.pt (0: none, best.pt = last epoch)",
    )
    d.add_argument(
        "--val-fold",
        type=int,
        default=None,
        help="hold out the K-th of the 1/val-fraction disjoint folds instead (k-fold cross-validation; default: none)",
    )
    d.add_argument("--classes", default=None, help="class ids to use, e.g. 1-20 or 1,5,9-12 (default: all)")
    d.add_argument("--workers", type=int, default=2, help="data-loading processes")
    d.add_argument("--cache", action="store_true", help="use (and build if needed) the packed uint8 cache")
    d.add_argument("--scale-min", type=float, default=None, help="smallest random-crop area fraction")
    d.add_argument("--scale-max", type=float, default=1.0, help="largest random-crop area fraction")
    d.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability")
    d.add_argument("--color-jitter", type=float, default=0.0, help="brightness/contrast/saturation jitter strength")
    d.add_argument(
        "--normalization",
        choices=["auto", *NORMALIZATIONS],
        default="auto",
        help="input scaling; auto: what the weights expect (ImageNet from scratch)",
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=None, help="epochs")
    o.add_argument("--batch-size", type=int, default=None, help="images per step and process")
    o.add_argument("--lr", type=float, default=None, help="base learning rate")
    o.add_argument("--head-lr-mult", type=float, default=None, help="classifier lr multiplier")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="optimizer")
    o.add_argument("--momentum", type=float, default=0.9, help="momentum (SGD, RMSprop)")
    o.add_argument("--weight-decay", type=float, default=None, help="weight decay")
    o.add_argument(
        "--no-decay-bn-bias",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="no weight decay on BN, biases and depthwise kernels",
    )
    o.add_argument("--label-smoothing", type=float, default=None, help="label smoothing")
    o.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    o.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0: off)")
    o.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights, e.g. 0.999 (0: off)")
    o.add_argument("--grad-clip", type=float, default=0.0, help="clip the gradient norm (0: off)")
    o.add_argument(
        "--amp", choices=["none", "bf16", "fp16"], default="none", help="mixed precision (fp16 on CUDA only)"
    )
    o.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    k = p.add_argument_group("distillation")
    k.add_argument("--teacher", default=None, help="a train.py checkpoint to distil from (default: none)")
    k.add_argument("--distill-temperature", type=float, default=4.0, help="softmax temperature of the soft targets")
    k.add_argument("--distill-weight", type=float, default=0.9, help="weight of the soft-target loss (1: no labels)")
    t = p.add_argument_group("test time (how val/test are evaluated; evaluate/predict/serve/export follow)")
    t.add_argument("--test-scale", type=float, default=None, help="test resolution = resolution x this (FixRes)")
    t.add_argument(
        "--test-hflip", action=argparse.BooleanOptionalAction, default=None, help="average with the mirror image"
    )
    t.add_argument(
        "--look-twice",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="second pass on the object cropped from the first pass's features",
    )
    s = p.add_argument_group("schedule")
    s.add_argument("--schedule", default="cosine", help=f"learning-rate schedule: {', '.join(SCHEDULES)}")
    s.add_argument("--warmup-epochs", type=float, default=None, help="linear warm-up")
    s.add_argument("--min-lr-factor", type=float, default=0.0, help="cosine: final lr as a fraction of --lr")
    s.add_argument("--step-size", type=int, default=30, help="step: epochs between decays")
    s.add_argument(
        "--gamma", type=float, default=0.1, help="step/multistep: decay factor; exponential: factor per epoch"
    )
    s.add_argument("--milestones", type=int, nargs="*", default=[], help="multistep: epochs at which to decay")
    r = p.add_argument_group("run")
    r.add_argument("--seed", type=int, default=0, help="random seed")
    r.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto", help="device")
    r.add_argument("--out", default=None, help="run folder (default: runs/<arch>-<width>-<resolution>)")
    r.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        help="continue from a checkpoint (default with no value: OUT/last.pt)",
    )
    r.add_argument("--force", action="store_true", help="start over in an --out folder that holds a run")
    r.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="evaluate every N epochs and after the last (default: 1 with a validation split, 5 without)",
    )
    r.add_argument(
        "--config",
        default=None,
        help="YAML or JSON file of these options; the command line overrides it (default: none)",
    )
    r.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's default allocator behaviour")
    r.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bars or progress lines (the per-epoch summary lines stay)",
    )
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, on top of the values of `--config FILE` (YAML or JSON) when given."""
    parser = get_args_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        path = Path(pre.config)
        if not path.is_file():
            raise UsageError(f"--config {path}: no such file")
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
        known = {a.dest for a in parser._actions}
        for key in values:
            if key.replace("-", "_") not in known:
                raise UsageError(f"--config {path}: unknown option {key!r}")
        parser.set_defaults(**{k.replace("-", "_"): v for k, v in values.items()})
    return parser.parse_args(argv)


def build_run(
    flags: argparse.Namespace, log: Callable[[str], None]
) -> tuple[RunConfig, MobileNetBase, list[str], list[bool] | None]:
    """The run record, its model (pretrained or freshly initialised), its class names, and with a transplanted
    head which classes started from the pretrained head's species (None without one)."""
    try:
        data_root, builtin_data = find_data_root(flags.data_root, log)
        class_ids = parse_classes(flags.classes)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        train_set = CUB200(data_root, "train", classes=class_ids)
    except CUBFormatError:
        raise
    except ValueError as e:  # classes the root does not have
        raise UsageError(f"--classes {flags.classes}: {e}") from None
    if len(train_set) == 0:
        raise UsageError(
            f"{data_root}: no training images (train_test_split.txt marks every image of these classes test)"
        )
    class_names = train_set.class_names
    pretrained = None
    if flags.pretrained:
        if flags.pretrained not in NAMED_STARTS and not Path(flags.pretrained).is_file():
            raise UsageError(f"--pretrained {flags.pretrained}: no such file (or use one of {', '.join(NAMED_STARTS)})")
        try:
            pretrained = load_pretrained(flags.pretrained, num_classes=len(class_names))
        except TFLiteImportError:
            raise
        except (ValueError, RuntimeError) as e:  # not a state_dict of a known layout; offline for a named start
            message = str(e) if str(e).startswith(str(flags.pretrained)) else f"{flags.pretrained}: {e}"
            raise UsageError(f"--pretrained {message}") from None
    config = resolve_config(
        vars(flags),
        data_root=str(data_root),
        builtin_data=builtin_data,
        pretrained_model=pretrained.config if pretrained else None,
        pretrained_resolution=pretrained.data_config["resolution"] if pretrained else None,
        bird_start=bool(flags.pretrained) and is_bird_start(flags.pretrained),
    )
    if pretrained is None:
        model = create_model(config.arch, width_mult=config.width, num_classes=len(class_names), dropout=config.dropout)
    else:
        model = pretrained
        model.config["dropout"] = model.dropout.p = config.dropout
    if config.normalization != "auto":
        mean, std = NORMALIZATIONS[config.normalization]
        model.data_config.update(mean=mean, std=std)
    model.data_config["resolution"] = config.resolution
    mapped = None
    if config.pretrained and config.transplant_head:
        found = species_head(config.pretrained, class_names)
        if found is not None:
            source, rows = found
            transplant_head(model, source, rows)
            mapped = [bool(r) for r in rows]
            genus = sum(len(r) > 1 for r in rows)
            log(
                f"head transplanted from {config.pretrained}: {sum(mapped)} of {len(rows)} classes start from its "
                f"species ({genus} of them from a genus' species averaged), {len(rows) - sum(mapped)} start fresh"
            )
    return config, model, class_names, mapped


def start_process(flags: argparse.Namespace, log: Callable[[str], None]) -> tuple[torch.device, int, int]:
    """Allocator, device, the torchrun process group and the seed: `(device, rank, world size)`."""
    if not flags.no_malloc_tuning:
        applied = "applied" if tune_malloc() else "not available here"
        log(f"allocator: glibc malloc keeps freed memory (M_MMAP_MAX=0, M_TRIM_THRESHOLD=64G): {applied}")
    try:
        device = select_device(flags.device)
    except ValueError as e:  # e.g. --device cuda on a machine without CUDA
        raise UsageError(str(e)) from None
    if flags.amp == "fp16" and device.type != "cuda":
        raise UsageError(f"--amp fp16 needs CUDA (device is {device.type}); use --amp bf16")
    rank, world = init_distributed(device)
    seed_everything(flags.seed)  # before the model is built: its initial weights come from this seed
    return device, rank, world


def make_optimizer(
    config: RunConfig, model: nn.Module, *, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer over the model's parameter groups and its per-iteration learning-rate schedule."""
    groups = parameter_groups(model, config.weight_decay, config.no_decay_bn_bias, config.head_lr_mult)
    optimizer = create_optimizer(config.optimizer, groups, config.lr, config.momentum)
    return optimizer, config.lr_schedule(steps_per_epoch).scheduler(optimizer)


def train_one_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    config: RunConfig,
    device: torch.device,
    *,
    epoch: int,
    num_classes: int,
    ema: ModelEMA | None = None,
    scaler: torch.amp.GradScaler | None = None,
    frozen: Sequence[nn.Module] = (),
    teacher: Teacher | None = None,
    show: bool = True,
) -> dict:
    """One pass over `loader`; returns train loss/accuracy (summed over ranks), images/s and seconds. With a
    `teacher`, batches come at its resolution and the loss is `training.distill.distillation_loss`."""
    model.train()
    for module in frozen:  # a frozen backbone keeps its batch-norm statistics
        module.eval()
    frozen_params = [p for module in frozen for p in module.parameters()]
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
    loss_sum, correct, seen, start = 0.0, 0.0, 0, time.perf_counter()
    progress = Progress(loader, total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}", enabled=show)
    for images, labels in progress:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        images, targets = mix_batch(
            images, labels, num_classes, mixup=config.mixup, cutmix=config.cutmix, smoothing=config.label_smoothing
        )
        if teacher is not None:  # the teacher sees the crop at its resolution, the student the same crop at its own
            teacher_logits = teacher.logits(images)
            images = teacher.student_view(images)
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model(images)
        if teacher is None:
            loss = soft_target_loss(logits, targets)
        else:
            loss = distillation_loss(
                logits, teacher_logits, targets, temperature=config.distill_temperature, weight=config.distill_weight
            )
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        for p in frozen_params:
            p.grad = None  # the optimizer skips parameters without gradient
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model)
        batch = labels.shape[0]
        loss_sum += loss.item() * batch
        correct += (logits.argmax(1) == labels).sum().item()
        seen += batch
        lr, ips = optimizer.param_groups[0]["lr"], seen / (time.perf_counter() - start)
        progress.update(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.2e}", ips=f"{ips:.1f}")
    seconds = time.perf_counter() - start
    loss_sum, correct, seen_all = all_reduce_sum([loss_sum, correct, seen], device)
    return {
        "train_loss": loss_sum / seen_all,
        "train_acc": correct / seen_all,
        "seconds": seconds,
        "images_per_s": seen_all / seconds,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    *,
    channels_last: bool = False,
    split: str = "test",
    mapped: list[bool] | None = None,
) -> dict:
    """`{split}_loss`, `{split}_top1` and `{split}_top5` over `loader` (each rank its shard, summed over ranks);
    with `mapped` (per class), also `{split}_top1_mapped` / `_unmapped`: the top-1 over the images of the classes
    that did and did not start from the pretrained head (None where a group has no image)."""
    model.eval()
    loss_sum, top1, top5, count = 0.0, 0.0, 0.0, 0.0
    group = torch.tensor(mapped if mapped is not None else [], dtype=torch.bool, device=device)
    hits = torch.zeros(2, dtype=torch.float64, device=device)  # right answers on unmapped, mapped classes
    seen = torch.zeros(2, dtype=torch.float64, device=device)
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        logits = model(images).float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += (ranked[:, 0] == labels).sum().item()
        top5 += (ranked == labels[:, None]).any(1).sum().item()
        count += labels.shape[0]
        if mapped is not None:
            is_mapped = group[labels].long()
            hits.index_add_(0, is_mapped, (ranked[:, 0] == labels).double())
            seen.index_add_(0, is_mapped, torch.ones_like(labels, dtype=torch.float64))
    loss_sum, top1, top5, count, *groups = all_reduce_sum(
        [loss_sum, top1, top5, count, *hits.tolist(), *seen.tolist()], device
    )
    result: dict[str, float | None] = {
        f"{split}_loss": loss_sum / count,
        f"{split}_top1": top1 / count,
        f"{split}_top5": top5 / count,
    }
    if mapped is not None:
        for name, right, total in (("unmapped", groups[0], groups[2]), ("mapped", groups[1], groups[3])):
            result[f"{split}_top1_{name}"] = right / total if total else None
    return result


def evaluate_run(model: nn.Module, loaders, config: RunConfig, device: torch.device, mapped: list[bool] | None) -> dict:
    """Validation (which decides best.pt) and test (curves only) with the run's test-time inference."""
    evaluated = config.inference.wrap(model)
    row = {}
    if loaders.val is not None:
        row.update(
            evaluate(evaluated, loaders.val, device, channels_last=config.channels_last, split="val", mapped=mapped)
        )
    row.update(evaluate(evaluated, loaders.test, device, channels_last=config.channels_last, mapped=mapped))
    return row


def epoch_summary(row: dict, epochs: int) -> str:
    if row["epoch"] == 0:
        line = "start, before training"
    else:
        line = f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}"
    for split in ("val", "test"):
        if row.get(f"{split}_top1") is not None:
            line += f" | {split} loss {row[f'{split}_loss']:.4f} top-1 {row[f'{split}_top1']:.4f}"
            line += f" top-5 {row[f'{split}_top5']:.4f}"
            for group in ("mapped", "unmapped"):
                if row.get(f"{split}_top1_{group}") is not None:
                    line += f" ({group} {row[f'{split}_top1_{group}']:.4f})"
    if row["epoch"] == 0:
        return line
    return line + f" | lr {row['lr']:.2e} | {row['images_per_s']:.1f} img/s, {row['seconds']:.1f}s"


def main(argv: list[str] | None = None, on_epoch: Callable[[list[dict]], None] | None = None) -> dict:
    """Train as the command line `argv` says; returns the final epoch's metrics and `best_val_top1`.

    `on_epoch`, if given, is called on rank 0 after every epoch with the metric rows so far (live curves in a
    notebook).
    """
    flags = parse_args(argv)
    log = rank_zero_logger()
    device, rank, world = start_process(flags, log)
    config, model, class_names, mapped = build_run(flags, log)
    teacher = Teacher(config.teacher, class_names, model.data_config, device) if config.teacher else None
    mean, std = model.data_config["mean"], model.data_config["std"]
    loaders = make_loaders(
        config, mean, std, rank, world, log, train_resolution=teacher.load_resolution if teacher else None
    )
    if teacher is not None:
        log(f"distilling from {config.teacher} (at {teacher.resolution}px, T={config.distill_temperature:g})")
    if flags.resume is None and config.pretrained and config.pretrained.endswith(".tflite"):
        # Folded batch norm: re-estimate statistics on training images so that fine-tuning starts sane.
        batches = (teacher.student_view(x) if teacher else x for x, _ in loaders.train)
        n = calibrate_batchnorm(model, batches, num_batches=config.calibration_batches)
        log(f"re-estimated batch norm of the imported weights on {n} training images")
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    ema = ModelEMA(model, config.ema) if config.ema > 0 else None
    net = wrap_distributed(model, device, world)
    optimizer, scheduler = make_optimizer(config, model, steps_per_epoch=len(loaders.train))
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    state = RunState(config, class_names, rank)
    try:
        extra = dict(model_config=model.config, data_config=model.data_config, world_size=world)
        log(state.start(flags.resume, model, optimizer, scheduler, ema, scaler, extra, force=flags.force))
        log(
            f"training {config.arch} width {config.width:g} at {config.resolution}px on {len(loaders.train_set)} images "
            f"x {config.epochs} epochs, {len(class_names)} classes, {world} process(es) on {device}; "
            f"evaluating with {config.inference.describe()}"
        )

        metrics: dict = {}
        if state.start_epoch == 0 and (mapped is not None or config.epochs == 0):
            # The start's own accuracy, before any training: with a transplanted head, the zero-shot figure.
            row = {"epoch": 0, "step": 0, **evaluate_run(model, loaders, config, device, mapped)}
            log(epoch_summary(row, config.epochs))
            if config.epochs == 0:
                state.end_epoch(0, row, model, optimizer, scheduler, ema, scaler)
            else:
                state.rows.append(row)
            metrics = row
        for epoch in range(state.start_epoch, config.epochs):
            # Every epoch draws from RNGs seeded by (seed, epoch, rank): a resumed run replays the same epochs.
            seed_everything(config.seed * 100_003 + epoch * 1009 + rank)
            loaders.train_sampler.set_epoch(epoch)
            frozen = [model.features] if epoch < config.freeze_epochs else []
            row = train_one_epoch(
                net,
                loaders.train,
                optimizer,
                scheduler,
                config,
                device,
                epoch=epoch,
                num_classes=len(class_names),
                ema=ema,
                scaler=scaler,
                frozen=frozen,
                teacher=teacher,
                show=rank == 0 and not config.no_progress,
            )
            average_buffers(model)
            row = {
                "epoch": epoch + 1,
                "step": (epoch + 1) * len(loaders.train),
                **row,
                "lr": optimizer.param_groups[0]["lr"],
            }
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                row.update(evaluate_run(ema.module if ema else model, loaders, config, device, mapped))
            log(epoch_summary(row, config.epochs))
            state.end_epoch(epoch + 1, row, model, optimizer, scheduler, ema, scaler)
            if on_epoch is not None and rank == 0:
                on_epoch(state.rows)
            metrics = row
        return dict(metrics, best_val_top1=state.best_val_top1)
    finally:
        state.close()  # the run folder's lock


def cli() -> None:
    if hasattr(signal, "SIGXFSZ"):  # over `ulimit -f`: an OSError (EFBIG) to report, not a silent kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        main()
    except (UsageError, TFLiteImportError, CheckpointError, CUBFormatError, FileNotFoundError, FileExistsError) as e:
        sys.exit(f"train.py: error: {e}")
    except KeyboardInterrupt:
        print("train.py: interrupted; the last finished epoch is in last.pt: continue with --resume", file=sys.stderr)
        sys.exit(130)
    except ImageDecodeError as e:  # a broken photo in the data; from a loader worker the message ends with ours
        sys.exit(f"train.py: error: {str(e).strip().splitlines()[-1]}")
    except OSError as e:  # a full disk, a file-size limit: every file is written atomically, the old ones stay whole
        where = f" ({e.filename})" if e.filename else ""
        sys.exit(f"train.py: error: {e.strerror or e}{where}; the previous checkpoint and metric files are intact")
    finally:
        close_distributed()


if __name__ == "__main__":
    cli()
