"""Train MobileNetV1/V2 on CUB-200-2011, or on the built-in generated birds when no CUB is on disk.

    python train.py --arch v2 --width 0.75                      # from scratch
    python train.py --pretrained ../shared/weights/mobilenet_v2_1.0_224_quant.tflite --epochs 15
    torchrun --nproc_per_node=2 train.py --arch v1              # data-parallel, gloo on CPU / nccl on CUDA

Defaults are recipes: without `--pretrained` a from-scratch recipe, with it a fine-tuning recipe (options
left unset take the recipe's value; `--help` lists both). Each run writes `runs/NAME/`: `config.json`,
`metrics.jsonl`, `metrics.csv`, `last.pt` every epoch and `best.pt` at the best test top-1. `--resume`
continues a run exactly where it stopped. The structure follows torchvision's reference classification
script: `get_args_parser`, `train_one_epoch`, `evaluate`, `main`.
"""

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from data.loaders import (
    CUB_DEFAULT,
    GENERATED_DEFAULT,
    SeededDataset,
    SeededSampler,
    build_dataset,
    default_data_root,
    parse_classes,
)
from data.transforms import NORMALIZATIONS, eval_transform, train_transform
from mobilenet import create_model
from mobilenet.checkpoint import read_checkpoint, save_checkpoint
from mobilenet.pretrained import calibrate_batchnorm, load_pretrained
from training.ema import ModelEMA
from training.mixing import mix_batch
from training.optim import OPTIMIZERS, create_optimizer, parameter_groups
from training.runtime import (
    all_reduce_sum,
    average_buffers,
    init_distributed,
    rng_states,
    seed_everything,
    select_device,
    set_rng_states,
    tune_malloc,
)
from training.schedules import SCHEDULES, Schedule

# Options left unset (None) take these values; see `--help`.
RECIPES = {
    "scratch": dict(epochs=30, batch_size=32, lr=0.05, optimizer="sgd", weight_decay=5e-5, warmup_epochs=2.0,
                    label_smoothing=0.1, head_lr_mult=1.0, scale_min=0.35, resolution=224),
    "finetune": dict(epochs=20, batch_size=32, lr=0.005, optimizer="sgd", weight_decay=5e-5, warmup_epochs=1.0,
                     label_smoothing=0.1, head_lr_mult=1.0, scale_min=0.35, resolution=224),
}  # fmt: skip
# The built-in generated birds are drawn at 128 px: train at 80 (evaluate the centre 80 of 91), from scratch
# for 14 epochs (fits 5 minutes on 2 CPU cores), with mild crops that keep the whole bird in view.
BUILTIN_OVERRIDES = {"resolution": 80, "epochs": 14, "scale_min": 0.8}
METRIC_FIELDS = [
    "epoch",
    "step",
    "train_loss",
    "train_acc",
    "test_loss",
    "test_top1",
    "test_top5",
    "lr",
    "seconds",
    "images_per_s",
]


class UsageError(ValueError):
    """An invalid option: reported as one line naming the flag, before any work."""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    recipe = "recipe: {scratch} from scratch, {finetune} with --pretrained"

    def rec(key: str) -> str:
        return recipe.format(scratch=RECIPES["scratch"][key], finetune=RECIPES["finetune"][key])

    m = p.add_argument_group("model")
    m.add_argument(
        "--arch", choices=["v1", "v2"], default=None, help="architecture (default: v2, or the --pretrained file's)"
    )
    m.add_argument(
        "--width", type=float, default=None, help="width multiplier (default: 1.0, or the --pretrained file's)"
    )
    m.add_argument(
        "--resolution",
        type=int,
        default=None,
        help=f"input size ({rec('resolution')} or its file's; {BUILTIN_OVERRIDES['resolution']} on the built-in set)",
    )
    m.add_argument("--dropout", type=float, default=0.2, help="dropout before the classifier")
    m.add_argument(
        "--pretrained",
        default=None,
        help="a .tflite / torchvision .pth / timm .pth or .safetensors file, or 'imagenet'",
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
    d.add_argument("--classes", default=None, help="class ids to use, e.g. 1-20 or 1,5,9-12 (default: all)")
    d.add_argument("--workers", type=int, default=2, help="data-loading processes")
    d.add_argument("--cache", action="store_true", help="use (and build if needed) the packed uint8 cache")
    d.add_argument(
        "--scale-min",
        type=float,
        default=None,
        help=f"smallest random-crop area fraction ({rec('scale_min')}; {BUILTIN_OVERRIDES['scale_min']} on the built-in set)",
    )
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
    o.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs ({rec('epochs')}; {BUILTIN_OVERRIDES['epochs']} from scratch on the built-in set)",
    )
    o.add_argument("--batch-size", type=int, default=None, help=f"images per step and process ({rec('batch_size')})")
    o.add_argument("--lr", type=float, default=None, help=f"base learning rate ({rec('lr')})")
    o.add_argument("--head-lr-mult", type=float, default=None, help=f"classifier lr multiplier ({rec('head_lr_mult')})")
    o.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help=f"optimizer ({rec('optimizer')})")
    o.add_argument("--momentum", type=float, default=0.9, help="momentum (SGD, RMSprop)")
    o.add_argument("--weight-decay", type=float, default=None, help=f"weight decay ({rec('weight_decay')})")
    o.add_argument(
        "--no-decay-bn-bias",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="no weight decay on BN, biases and depthwise kernels",
    )
    o.add_argument("--label-smoothing", type=float, default=None, help=f"label smoothing ({rec('label_smoothing')})")
    o.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0: off)")
    o.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (0: off)")
    o.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights, e.g. 0.999 (0: off)")
    o.add_argument("--grad-clip", type=float, default=0.0, help="clip the gradient norm (0: off)")
    o.add_argument(
        "--amp", choices=["none", "bf16", "fp16"], default="none", help="mixed precision (fp16 on CUDA only)"
    )
    o.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    s = p.add_argument_group("schedule")
    s.add_argument("--schedule", default="cosine", help=f"one of {', '.join(SCHEDULES)}")
    s.add_argument("--warmup-epochs", type=float, default=None, help=f"linear warm-up ({rec('warmup_epochs')})")
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
    r.add_argument("--eval-every", type=int, default=1, help="evaluate every N epochs (and always after the last)")
    r.add_argument("--config", default=None, help="YAML or JSON file of these options (the command line overrides it)")
    r.add_argument("--no-malloc-tuning", action="store_true", help="keep glibc's default allocator behaviour")
    r.add_argument("--no-progress", action="store_true", help="no progress bars (the per-epoch summary lines stay)")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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


def resolve(args: argparse.Namespace, log) -> argparse.Namespace:
    """Fill recipe defaults, the data root and the run folder; check every value. Raises UsageError."""
    if args.data_root is None:
        args.data_root = str(default_data_root(log))
        args.builtin_data = Path(args.data_root) != CUB_DEFAULT
    else:
        args.builtin_data = Path(args.data_root).resolve() == (GENERATED_DEFAULT / "CUB_200_2011").resolve()
        if not (Path(args.data_root) / "images.txt").is_file():
            raise UsageError(f"--data-root {args.data_root}: no images.txt there (the folder holding CUB's files)")
    recipe = dict(RECIPES["finetune" if args.pretrained else "scratch"])
    if args.builtin_data and not args.pretrained:
        recipe.update(BUILTIN_OVERRIDES)
    for key, value in recipe.items():
        if getattr(args, key) is None and key != "resolution":
            setattr(args, key, value)
    checks = [
        (args.lr > 0, "--lr", "must be > 0", args.lr),
        (args.epochs > 0, "--epochs", "must be > 0", args.epochs),
        (args.batch_size > 0, "--batch-size", "must be > 0", args.batch_size),
        (args.width is None or 0 < args.width <= 4, "--width", "must be in (0, 4]", args.width),
        (args.resolution is None or args.resolution >= 32, "--resolution", "must be at least 32", args.resolution),
        (0 <= args.dropout < 1, "--dropout", "must be in [0, 1)", args.dropout),
        (args.weight_decay >= 0, "--weight-decay", "must be >= 0", args.weight_decay),
        (0 <= args.label_smoothing < 1, "--label-smoothing", "must be in [0, 1)", args.label_smoothing),
        (
            0 < args.scale_min <= args.scale_max <= 1,
            "--scale-min/--scale-max",
            "must satisfy 0 < min <= max <= 1",
            (args.scale_min, args.scale_max),
        ),
        (args.schedule in SCHEDULES, "--schedule", f"must be one of {', '.join(SCHEDULES)}", args.schedule),
        (args.workers >= 0, "--workers", "must be >= 0", args.workers),
        (args.ema == 0 or 0 < args.ema < 1, "--ema", "must be in (0, 1)", args.ema),
        (args.eval_every > 0, "--eval-every", "must be > 0", args.eval_every),
        (args.freeze_epochs >= 0, "--freeze-epochs", "must be >= 0", args.freeze_epochs),
        (args.warmup_epochs >= 0, "--warmup-epochs", "must be >= 0", args.warmup_epochs),
    ]
    for ok, flag, rule, value in checks:
        if not ok:
            raise UsageError(f"{flag} {rule}, got {value}")
    try:
        args.class_ids = parse_classes(args.classes)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.pretrained and args.pretrained != "imagenet" and not Path(args.pretrained).is_file():
        raise UsageError(f"--pretrained {args.pretrained}: no such file (or use 'imagenet')")
    return args


def build_model(args: argparse.Namespace, num_classes: int) -> nn.Module:
    if args.pretrained:
        model = load_pretrained(args.pretrained, num_classes=num_classes)
        for flag, key, wanted in (("--arch", "arch", args.arch), ("--width", "width_mult", args.width)):
            if wanted is not None and wanted != model.config[key]:
                raise UsageError(
                    f"{flag} {wanted} does not match --pretrained {args.pretrained} ({key} {model.config[key]})"
                )
        model.config["dropout"] = args.dropout
        model.dropout.p = args.dropout
    else:
        model = create_model(
            args.arch or "v2", width_mult=args.width or 1.0, num_classes=num_classes, dropout=args.dropout
        )
    args.arch, args.width = model.config["arch"], model.config["width_mult"]
    if args.resolution is None:
        pretrained_resolution = model.data_config["resolution"] if args.pretrained else None
        args.resolution = pretrained_resolution or (
            BUILTIN_OVERRIDES["resolution"] if args.builtin_data else RECIPES["scratch"]["resolution"]
        )
    if args.normalization != "auto":
        mean, std = NORMALIZATIONS[args.normalization]
        model.data_config.update(mean=mean, std=std)
    model.data_config["resolution"] = args.resolution
    return model


def soft_target_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=1), dim=1).mean()


def train_one_epoch(
    model,
    loader,
    optimizer,
    scheduler,
    args,
    device,
    *,
    ema=None,
    scaler=None,
    num_classes,
    epoch,
    frozen=(),
    show=True,
) -> dict:
    """One pass over `loader`; returns train loss/accuracy (summed over ranks), images/s and seconds."""
    model.train()
    for module in frozen:  # a frozen backbone keeps its batch-norm statistics
        module.eval()
    frozen_params = [p for module in frozen for p in module.parameters()]
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    loss_sum, correct, seen, start = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch + 1}/{args.epochs}",
        disable=not show,
        leave=False,
        dynamic_ncols=True,
        mininterval=1.0,
    )
    for images, labels in bar:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        images, targets = mix_batch(
            images, labels, num_classes, mixup=args.mixup, cutmix=args.cutmix, smoothing=args.label_smoothing
        )
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits = model(images)
        loss = soft_target_loss(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        for p in frozen_params:
            p.grad = None  # the optimizer skips parameters without gradient
        if args.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model.module if hasattr(model, "module") else model)
        batch = labels.shape[0]
        loss_sum += loss.item() * batch
        correct += (logits.argmax(1) == labels).sum().item()
        seen += batch
        elapsed = time.perf_counter() - start
        bar.set_postfix(
            loss=f"{loss_sum / seen:.3f}",
            acc=f"{correct / seen:.3f}",
            lr=f"{optimizer.param_groups[0]['lr']:.2e}",
            ips=f"{seen / elapsed:.1f}",
        )
    seconds = time.perf_counter() - start
    loss_sum, correct, seen_all = all_reduce_sum([loss_sum, correct, seen], device)
    return {
        "train_loss": loss_sum / seen_all,
        "train_acc": correct / seen_all,
        "seconds": seconds,
        "images_per_s": seen_all / seconds,
    }


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, *, channels_last: bool = False) -> dict:
    """Loss, top-1 and top-5 over `loader` (each rank its shard, summed over ranks)."""
    model.eval()
    loss_sum, top1, top5, count = 0.0, 0, 0, 0
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
    loss_sum, top1, top5, count = all_reduce_sum([loss_sum, top1, top5, count], device)
    return {"test_loss": loss_sum / count, "test_top1": top1 / count, "test_top5": top5 / count}


class ShardSampler(torch.utils.data.Sampler):
    """Every world-th index from rank: the shards cover the set exactly once (no padding), for evaluation."""

    def __init__(self, length: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, length, world))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loaders(args, mean, std, rank: int, world: int, log):
    train_tf = train_transform(
        args.resolution,
        mean=mean,
        std=std,
        scale=(args.scale_min, args.scale_max),
        hflip=args.hflip,
        color_jitter=args.color_jitter,
    )
    test_tf = eval_transform(args.resolution, mean=mean, std=std)
    common = dict(
        crop=args.crop,
        classes=args.class_ids,
        cache=args.cache,
        cache_size=round(args.resolution / 0.875),
        workers=args.workers,
        log=log,
    )
    train_set = build_dataset(args.data_root, "train", train_tf, **common)
    test_set = build_dataset(args.data_root, "test", test_tf, **common)
    distributed = (
        torch.utils.data.DistributedSampler(train_set, world, rank, shuffle=True, seed=args.seed) if world > 1 else None
    )
    train_sampler = SeededSampler(len(train_set), args.seed, distributed)
    # Persistent workers: forking a process with a large heap and then writing to it costs a copy of every
    # touched page, so workers are forked once, not every epoch.
    train_loader = torch.utils.data.DataLoader(
        SeededDataset(train_set), batch_size=args.batch_size, sampler=train_sampler, num_workers=args.workers,
        drop_last=len(train_set) // world >= 2 * args.batch_size, persistent_workers=args.workers > 0,
    )  # fmt: skip
    test_loader = torch.utils.data.DataLoader(
        test_set, batch_size=max(args.batch_size, 64), sampler=ShardSampler(len(test_set), rank, world),
        num_workers=args.workers, persistent_workers=args.workers > 0,
    )  # fmt: skip
    return train_set, train_loader, train_sampler, test_loader


def _write_metrics(out: Path, rows: list[dict]) -> None:
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None, on_epoch: Callable[[list[dict]], None] | None = None) -> dict:
    """Train as the command line `argv` says; returns the final epoch's metrics.

    `on_epoch`, if given, is called on rank 0 after every epoch with the metric rows so far (live curves in a
    notebook).
    """
    args = parse_args(argv)
    rank_env = int(os.environ.get("RANK", 0))

    def log(message: str) -> None:
        if rank_env == 0:
            print(message, flush=True)

    args = resolve(args, log)
    if not args.no_malloc_tuning:
        log(
            f"allocator: glibc malloc keeps freed memory (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=64G): {'applied' if tune_malloc() else 'not available here'}; --no-malloc-tuning turns it off"
        )
    try:
        device = select_device(args.device)
    except ValueError as e:  # e.g. --device cuda on a machine without CUDA
        raise UsageError(str(e)) from None
    if args.amp == "fp16" and device.type != "cuda":
        raise UsageError(f"--amp fp16 needs CUDA (device is {device.type}); use --amp bf16")
    rank, world = init_distributed(device)
    seed_everything(args.seed)

    from data.cub import CUB200

    class_names = CUB200(args.data_root, "train", classes=args.class_ids).class_names
    model = build_model(args, len(class_names))
    mean, std = model.data_config["mean"], model.data_config["std"]
    args.out = args.out or f"runs/{args.arch}-{args.width:g}-{args.resolution}"
    out = Path(args.out)
    train_set, train_loader, train_sampler, test_loader = make_loaders(args, mean, std, rank, world, log)

    start_epoch, rows, best_top1 = 0, [], -1.0
    checkpoint = None
    if args.resume is not None:
        path = Path(args.resume or out / "last.pt")
        checkpoint = read_checkpoint(path)
        for key, ours in (("arch", args.arch), ("width_mult", args.width), ("num_classes", len(class_names))):
            if checkpoint["model_config"].get(key) != ours:
                raise UsageError(
                    f"--resume {path}: the run has {key} {checkpoint['model_config'].get(key)}, this command {ours}"
                )
        model.load_state_dict(checkpoint["model"])
    elif args.pretrained and str(args.pretrained).endswith(".tflite"):
        # Folded batch norm: re-estimate statistics on training images so that fine-tuning starts sane.
        n = calibrate_batchnorm(model, (images for images, _ in train_loader), num_batches=args.calibration_batches)
        log(f"re-estimated batch norm of the imported weights on {n} training images")
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    ema = ModelEMA(model, args.ema) if args.ema > 0 else None
    net = (
        torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if world > 1
        else model
    )
    optimizer = create_optimizer(
        args.optimizer,
        parameter_groups(model, args.weight_decay, args.no_decay_bn_bias, args.head_lr_mult),
        args.lr,
        args.momentum,
    )
    schedule = Schedule(args.schedule, args.epochs, len(train_loader), args.warmup_epochs, min_factor=args.min_lr_factor,
                        step_size=args.step_size, gamma=args.gamma, milestones=args.milestones)  # fmt: skip
    scheduler = schedule.scheduler(optimizer)
    scaler = torch.amp.GradScaler("cuda") if args.amp == "fp16" and device.type == "cuda" else None
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if ema is not None and checkpoint.get("ema"):
            ema.load_state_dict(checkpoint["ema"])
        if scaler is not None and checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        set_rng_states(checkpoint["rng"])
        start_epoch, best_top1 = checkpoint["epoch"], checkpoint.get("best_top1", -1.0)
        rows = (
            [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
            if (out / "metrics.jsonl").exists()
            else []
        )
        rows = [row for row in rows if row["epoch"] <= start_epoch]
        log(f"resumed {args.resume or out / 'last.pt'} at epoch {start_epoch}")

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items()}
        config.update(
            model_config=model.config, data_config=model.data_config, world_size=world, class_names=class_names
        )
        (out / "config.json").write_text(json.dumps(config, indent=2, default=str), encoding="utf-8")
    log(f"training {args.arch} width {args.width:g} at {args.resolution}px on {len(train_set)} images x {args.epochs} epochs, "
        f"{len(class_names)} classes, {world} process(es) on {device}; writing {out}")  # fmt: skip

    metrics: dict = {}
    for epoch in range(start_epoch, args.epochs):
        # Every epoch draws from RNGs seeded by (seed, epoch, rank): a resumed run replays the same epochs.
        seed_everything(args.seed * 100_003 + epoch * 1009 + rank)
        train_sampler.set_epoch(epoch)
        frozen = [model.features] if epoch < args.freeze_epochs else []
        row = train_one_epoch(net, train_loader, optimizer, scheduler, args, device, ema=ema, scaler=scaler,
                              num_classes=len(class_names), epoch=epoch, frozen=frozen, show=rank == 0 and not args.no_progress)  # fmt: skip
        average_buffers(model)
        row = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * len(train_loader),
            **row,
            "lr": optimizer.param_groups[0]["lr"],
        }
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            row.update(evaluate(ema.module if ema else model, test_loader, device, channels_last=args.channels_last))
        rows.append(row)
        metrics = row
        if rank == 0:
            top1 = row.get("test_top1")
            summary = f"epoch {epoch + 1}/{args.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}"
            if top1 is not None:
                summary += f" | test loss {row['test_loss']:.4f} top-1 {top1:.4f} top-5 {row['test_top5']:.4f}"
            log(summary + f" | lr {row['lr']:.2e} | {row['images_per_s']:.1f} img/s, {row['seconds']:.1f}s")
            _write_metrics(out, rows)
            if on_epoch is not None:
                on_epoch(rows)
            state = {
                "model": model.state_dict(), "model_config": model.config, "data_config": model.data_config,
                "class_names": class_names, "config": {k: v for k, v in vars(args).items() if not k.startswith("_")},
                "epoch": epoch + 1, "metrics": row, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema else None, "scaler": scaler.state_dict() if scaler else None,
                "rng": rng_states(), "best_top1": max(best_top1, top1 if top1 is not None else -1.0),
            }  # fmt: skip
            save_checkpoint(state, out / "last.pt")
            if top1 is not None and top1 > best_top1:
                save_checkpoint(state, out / "best.pt")
        if row.get("test_top1") is not None:
            best_top1 = max(best_top1, row["test_top1"])
    metrics = dict(metrics, best_top1=best_top1)
    if world > 1:
        metrics["ranks_in_sync"] = weights_in_sync(model, device)
        log(f"weights identical on all {world} ranks: {metrics['ranks_in_sync']}")
    return metrics


def weights_in_sync(model: nn.Module, device: torch.device) -> bool:
    """True when every rank holds exactly the same parameters and buffers (compared through a checksum)."""
    flat = torch.cat([t.detach().double().flatten() for t in model.state_dict().values()])
    signature = torch.stack(
        [flat.sum(), (flat * torch.arange(1, flat.numel() + 1, device=flat.device).remainder(9973)).sum()]
    )
    gathered = [torch.zeros_like(signature) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(gathered, signature.to(device))
    return all(torch.equal(g, gathered[0]) for g in gathered)


def cli() -> None:
    try:
        main()
    except UsageError as e:
        sys.exit(f"train.py: error: {e}")
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    cli()
