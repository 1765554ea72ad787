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
import copy
import dataclasses
import json
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from cli import UsageError, run
from data.cub import CUBFormatError
from data.loaders import find_data_root
from data.species_map import species_rows
from evaluation.metrics import lookalikes, lookalikes_of
from mobilenet import create_model
from mobilenet.card import ModelCard
from mobilenet.common import IMAGENET_MEAN, IMAGENET_STD, MobileNetBase
from mobilenet.gate import GATE_KEPT, gate_of, gate_threshold, no_bird_probability
from mobilenet.pretrained import (
    NAMED_STARTS,
    calibrate_batchnorm,
    is_bird_start,
    labels_problem,
    load_pretrained,
    transplant_head,
)
from mobilenet.tflite import TFLiteImportError
from training.config import (
    CALIBRATION_BATCHES,
    RunConfig,
    add_options,
    option_names_by_key,
    precision,
    resolve_config,
)
from training.data import make_loaders
from training.device_pipeline import DeviceBatches
from training.distill import Teacher, distillation_loss
from training.ema import ModelEMA
from training.mixing import mix_batch, soft_target_loss
from training.optim import create_optimizer, parameter_groups
from training.probe import fit_probe, pooled_features
from training.progress import Progress, eta
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
from training.state import RunState

INTERRUPTED = "interrupted; if an epoch had finished, its last.pt continues the run with --resume"
FILES_WHOLE = "; every file is written whole, so what the run folder held before is unchanged"
LOG_EVERY = 20  # steps between reads of the running loss and accuracy (each read waits for the device)

__all__ = ["UsageError", "evaluate", "get_args_parser", "main", "train_one_epoch"]


def get_args_parser() -> argparse.ArgumentParser:
    """`RunConfig`'s options (`training.config.add_options`) and what this command does with the run folder."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_options(p)
    r = p.add_argument_group("this command")
    r.add_argument(
        "--resume",
        nargs="?",
        const="",
        default=None,
        help="continue from a checkpoint (default with no value: OUT/last.pt)",
    )
    r.add_argument("--force", action="store_true", help="start over in an --out folder that holds a run")
    r.add_argument(
        "--config",
        default=None,
        help="YAML or JSON file of the options above; the command line overrides it (default: none)",
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
        values = _read_config_file(path)
        if not isinstance(values, dict):
            raise UsageError(f"--config {path}: not a mapping of option names to values")
        names = option_names_by_key()
        unknown = [key for key in values if key not in names]
        if unknown:
            raise UsageError(f"--config {path}: unknown option {unknown[0]!r}")
        parser.set_defaults(**{names[k]: v for k, v in values.items()})
    return parser.parse_args(argv)


def _read_config_file(path: Path) -> object:
    """A `--config` file's content (YAML by its suffix, else JSON); UsageError naming the file and the problem.
    YAML is read by the safe loader: a `!!python` tag is refused, never executed."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text) or {}
        return json.loads(text)
    except UnicodeDecodeError as e:
        raise UsageError(f"--config {path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise UsageError(f"--config {path}: not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise UsageError(f"--config {path}: not valid YAML: {problem}{at}") from None


def build_run(
    flags: argparse.Namespace, log: Callable[[str], None]
) -> tuple[RunConfig, MobileNetBase, ModelCard, list[bool] | None, dict | None]:
    """The run record, its model (pretrained or freshly initialised from the run's seed), the model's card
    (made here, once), with a transplanted head which classes started from the pretrained head's species
    (None without), and the start's head as a "no bird" gate when the start has a background output
    (`mobilenet.gate`; None without)."""
    try:
        data_root, builtin_data = find_data_root(flags.data_root, log)
    except ValueError as e:
        raise UsageError(str(e)) from None
    start, start_card = None, None  # the --pretrained model with its own head: its facts decide the recipe
    if flags.pretrained:
        if flags.pretrained not in NAMED_STARTS and not Path(flags.pretrained).is_file():
            raise UsageError(f"--pretrained {flags.pretrained}: no such file (or use one of {', '.join(NAMED_STARTS)})")
        try:
            start, start_card = load_pretrained(flags.pretrained)
        except TFLiteImportError:
            raise
        except (ValueError, RuntimeError) as e:  # not a state_dict of a known layout; offline for a named start
            message = str(e) if str(e).startswith(str(flags.pretrained)) else f"{flags.pretrained}: {e}"
            raise UsageError(f"--pretrained {message}") from None
    config = resolve_config(
        vars(flags),
        data_root=str(data_root),
        builtin_data=builtin_data,
        pretrained_model=start.config if start else None,
        pretrained_resolution=start_card.resolution if start_card else None,
        bird_start=start is not None and is_bird_start(flags.pretrained),
    )
    log(f"recipe: {config.recipe}" + (f" (chosen by --pretrained {flags.pretrained})" if flags.pretrained else ""))
    try:
        train_set = config.dataset("train", None)
    except CUBFormatError:
        raise
    except ValueError as e:  # classes the root does not have
        raise UsageError(f"--classes {_show_classes(config)}: {e}") from None
    if len(train_set) == 0:
        raise UsageError(
            f"{data_root}: no training images (train_test_split.txt marks every image of these classes test)"
        )
    class_names = train_set.class_names
    seed_everything(config.seed)  # the initial weights (a fresh model, a fresh head) come from this seed
    if start is None or start_card is None:
        if config.transplant_head:
            raise UsageError("--transplant-head needs --pretrained (a file whose head names species)")
        model = create_model(config.arch, width_mult=config.width, num_classes=len(class_names), dropout=config.dropout)
        mapped, card, gate = None, config.card(class_names, mean=IMAGENET_MEAN, std=IMAGENET_STD), None
    else:
        model, head = start, copy.deepcopy(start.classifier)
        gate = gate_of(head, start_card.class_names)
        model.reset_classifier(len(class_names))
        model.config["dropout"] = model.dropout.p = config.dropout
        mapped = _transplant(model, head, start_card, class_names, log) if config.transplant_head else None
        card = config.card(class_names, mean=start_card.mean, std=start_card.std, source=start_card.source)
    return config, model, card, mapped, gate


def _show_classes(config: RunConfig) -> str:
    return ",".join(map(str, config.class_ids or ()))


def _transplant(
    model: MobileNetBase, source: nn.Module, start: ModelCard, class_names: list[str], log: Callable
) -> list[bool] | None:
    """Start each class the start's labels (its card's class names) name from its species' rows
    (`species_rows`); which classes did."""
    labels, origin = list(start.class_names) or None, start.source
    try:
        rows = species_rows(source, labels, class_names)
    except ValueError as e:
        raise UsageError(f"--transplant-head: {origin}: {e}") from None
    if labels is None:
        outputs = source.out_features if isinstance(source, nn.Linear) else 0
        where = Path(origin)
        why = labels_problem(where, outputs) if where.is_file() else "the start names no species"
        raise UsageError(f"--transplant-head: {origin}: {why}")
    if rows is None:
        raise UsageError(
            f"--transplant-head: none of the {len(class_names)} classes is among {origin}'s labels "
            "(data/cub200_inat_birds.tsv maps CUB's species to iNaturalist's)"
        )
    transplant_head(model, cast(nn.Linear, source), rows)
    mapped = [bool(r) for r in rows]
    genus = sum(len(r) > 1 for r in rows)
    log(
        f"head transplanted from {origin}: {sum(mapped)} of {len(rows)} classes start from its "
        f"species ({genus} of them from a genus' species averaged), {len(rows) - sum(mapped)} start fresh"
    )
    return mapped


def _precision_text(config: RunConfig, amp: str, channels_last: bool) -> str:
    parts = [f"amp {amp}", "channels_last" if channels_last else "NCHW"]
    parts += ["batches made on the device"] if config.device_pipeline else []
    return ", ".join(parts + (["torch.compile"] if config.compile else []))


def start_process(config: RunConfig, log: Callable[[str], None]) -> tuple[torch.device, int, int]:
    """Allocator, device and the torchrun process group: `(device, rank, world size)`."""
    if config.malloc_tuning:
        applied = "applied" if tune_malloc() else "not available here"
        log(f"allocator: glibc malloc keeps freed memory (M_MMAP_MAX=0, no trimming): {applied}")
    try:
        device = select_device(config.device)
    except ValueError as e:  # e.g. --device cuda on a machine without CUDA
        raise UsageError(str(e)) from None
    if config.amp == "fp16" and device.type != "cuda":
        raise UsageError(f"--amp fp16 needs CUDA (device is {device.type}); use --amp bf16")
    rank, world = init_distributed(device)
    return device, rank, world


def make_optimizer(
    config: RunConfig, model: nn.Module, *, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer over the model's parameter groups and its per-iteration learning-rate schedule."""
    groups = parameter_groups(model, config.weight_decay, config.decay_bn_bias, config.head_lr_mult)
    optimizer = create_optimizer(config.optimizer, groups, config.lr, config.momentum)
    return optimizer, config.lr_schedule(steps_per_epoch).scheduler(optimizer)


def train_one_epoch(
    model: nn.Module,
    loader: torch.utils.data.DataLoader | DeviceBatches,
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
    amp: str,
    channels_last: bool,
) -> dict:
    """One pass over `loader` in `amp` and (if `channels_last`) NHWC (`training.config.precision`, resolved
    once per run); returns train loss/accuracy (summed over ranks), images/s and seconds. With a `teacher`,
    batches come at its resolution and the loss is `training.distill.distillation_loss`."""
    model.train()
    for module in frozen:  # a frozen backbone keeps its batch-norm statistics
        module.eval()
    frozen_params = [p for module in frozen for p in module.parameters()]
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    # Loss and correct counts add up on the device and are read every LOG_EVERY steps: no host sync per step.
    loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device)
    seen, start = 0, time.perf_counter()
    progress = Progress(loader, total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}", enabled=show)
    for step, (images, labels) in enumerate(progress, 1):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        images, targets = mix_batch(
            images, labels, num_classes, mixup=config.mixup, cutmix=config.cutmix, smoothing=config.label_smoothing
        )
        if teacher is not None:  # the teacher sees the crop at its resolution, the student the same crop at its own
            teacher_logits = teacher.logits(images)
            images = teacher.student_view(images)
        if channels_last:
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
        loss_sum += loss.detach().float() * batch
        correct += (logits.argmax(1) == labels).sum()
        seen += batch
        if show and (step % LOG_EVERY == 0 or step == len(loader)):
            lr, ips = optimizer.param_groups[0]["lr"], seen / (time.perf_counter() - start)
            loss_now, acc_now = loss_sum.item() / seen, correct.item() / seen
            progress.update(loss=f"{loss_now:.3f}", acc=f"{acc_now:.3f}", lr=f"{lr:.2e}", ips=f"{ips:.1f}")
    seconds = time.perf_counter() - start
    loss_total, correct_total, seen_all = all_reduce_sum([loss_sum.item(), correct.item(), seen], device)
    return {
        "train_loss": loss_total / seen_all,
        "train_acc": correct_total / seen_all,
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
    confusion: torch.Tensor | None = None,
) -> dict:
    """`{split}_loss`, `{split}_top1` and `{split}_top5` over `loader` (each rank its shard, summed over ranks);
    with `mapped` (per class), also `{split}_top1_mapped` / `_unmapped`: the top-1 over the images of the classes
    that did and did not start from the pretrained head (None where a group has no image). With `confusion`
    (classes x classes, on the CPU), each image's probabilities are added to its true class's row (this rank's
    shard)."""
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
        if confusion is not None:
            confusion.index_add_(0, labels.cpu(), logits.softmax(1).double().cpu())
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


def evaluate_run(
    model: nn.Module,
    loaders,
    card: ModelCard,
    channels_last: bool,
    device: torch.device,
    mapped: list[bool] | None,
    confusion: torch.Tensor | None = None,
) -> dict:
    """Validation (which decides best.pt; its summed probabilities by true class into `confusion`) and test
    (curves only) with the run's test-time inference."""
    evaluated = card.inference.wrap(model)
    row = {}
    if loaders.val is not None:
        row.update(
            evaluate(
                evaluated,
                loaders.val,
                device,
                channels_last=channels_last,
                split="val",
                mapped=mapped,
                confusion=confusion,
            )
        )
    row.update(evaluate(evaluated, loaders.test, device, channels_last=channels_last, mapped=mapped))
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
    config, model, card, mapped, gate = build_run(flags, log)
    device, rank, world = start_process(config, log)
    teacher = Teacher(config.teacher, card, device) if config.teacher else None
    loaders = make_loaders(
        config, card, rank, world, log, device=device, train_resolution=teacher.load_resolution if teacher else None
    )
    if teacher is not None:
        log(f"distilling from {config.teacher} (at {teacher.resolution}px, T={config.distill_temperature:g})")
    if flags.resume is None and config.pretrained and config.pretrained.endswith(".tflite"):
        # Folded batch norm: re-estimate statistics on training images so that fine-tuning starts sane.
        batches = ((teacher.student_view(x) if teacher else x).cpu() for x, _ in loaders.train)
        n = calibrate_batchnorm(model, batches, num_batches=CALIBRATION_BATCHES)
        log(f"re-estimated batch norm of the imported weights on {n} training images")
    model.to(device)
    amp, channels_last = precision(config, device.type)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs
    if flags.resume is None and loaders.train_plain is not None:
        features, labels = pooled_features(model, loaders.train_plain, device, channels_last)
        probe = fit_probe(features, labels, len(card.class_names), seed=config.seed, log=log)
        weight, bias = probe.weight, probe.bias
        card = dataclasses.replace(card, lookalikes=lookalikes(probe.held_out, probe.held_labels))
        if gate is not None and config.epochs == 0:  # the start's "background" output on its frozen features
            threshold = gate_threshold(no_bird_probability(gate, features))
            card = dataclasses.replace(card, gate_threshold=threshold)
            log(
                f"gate: the start's background output; no bird from P = {threshold:.4f} ({GATE_KEPT:.0%} of training photos kept)"
            )
        with torch.no_grad():
            head = cast(nn.Linear, model.classifier)
            head.weight.copy_(weight)
            head.bias.copy_(bias)
    ema = ModelEMA(model, config.ema) if config.ema > 0 else None
    net = wrap_distributed(model, device, world)
    optimizer, scheduler = make_optimizer(config, model, steps_per_epoch=len(loaders.train))
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    trained = (
        cast(nn.Module, torch.compile(net)) if config.compile else net
    )  # the checkpoints hold `model`'s own weights
    gate = gate if card.gate_threshold is not None else None  # kept only where its threshold was chosen
    state = RunState(config, card, rank, gate)
    try:
        extra = dict(model_config=model.config, world_size=world)
        log(state.start(flags.resume, model, optimizer, scheduler, ema, scaler, extra, force=flags.force))
        log(
            f"training {config.arch} width {config.width:g} at {config.resolution}px on {len(loaders.train_set)} images "
            f"x {config.epochs} epochs, {len(card.class_names)} classes, {world} process(es) on {device} "
            f"({_precision_text(config, amp, channels_last)}); evaluating with {card.inference.describe()}"
        )

        metrics: dict = {}
        if state.start_epoch == 0 and (mapped is not None or config.probe_head or config.epochs == 0):
            # The start's own accuracy, before any training: the zero-shot figure of a transplanted head, the probe's.
            row = {"epoch": 0, "step": 0, **evaluate_run(model, loaders, card, channels_last, device, mapped)}
            log(epoch_summary(row, config.epochs))
            if config.epochs == 0:
                state.end_epoch(0, row, model, optimizer, scheduler, ema, scaler)
            else:
                state.rows.append(row)
            metrics = row
        started = time.perf_counter()
        for epoch in range(state.start_epoch, config.epochs):
            # Every epoch draws from RNGs seeded by (seed, epoch, rank): a resumed run replays the same epochs.
            seed_everything(config.seed * 100_003 + epoch * 1009 + rank)
            loaders.train_sampler.set_epoch(epoch)
            frozen = [model.features] if epoch < config.freeze_epochs else []
            row = train_one_epoch(
                trained,
                loaders.train,
                optimizer,
                scheduler,
                config,
                device,
                epoch=epoch,
                num_classes=len(card.class_names),
                ema=ema,
                scaler=scaler,
                frozen=frozen,
                teacher=teacher,
                show=rank == 0 and config.progress,
                amp=amp,
                channels_last=channels_last,
            )
            average_buffers(model)
            row = {
                "epoch": epoch + 1,
                "step": (epoch + 1) * len(loaders.train),
                **row,
                "lr": optimizer.param_groups[0]["lr"],
            }
            last = epoch + 1 == config.epochs
            if (epoch + 1) % config.eval_every == 0 or last:
                # The last epoch's validation photos give the card its look-alikes (one process: its shard is all).
                k = len(card.class_names)
                confusion = torch.zeros(k, k, dtype=torch.float64) if last and world == 1 else None
                evaluated = ema.module if ema else model
                row.update(evaluate_run(evaluated, loaders, card, channels_last, device, mapped, confusion))
                if confusion is not None and loaders.val is not None:
                    state.card = card = dataclasses.replace(card, lookalikes=lookalikes_of(confusion))
            finished, spent = epoch + 1 - state.start_epoch, time.perf_counter() - started
            to_go = config.epochs - state.start_epoch
            left = "" if epoch + 1 == config.epochs else f" | run eta {eta(spent, finished, to_go)}"
            log(epoch_summary(row, config.epochs) + left)
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
        run("train.py", main, interrupted=INTERRUPTED, os_note=FILES_WHOLE)
    finally:
        close_distributed()


if __name__ == "__main__":
    cli()
