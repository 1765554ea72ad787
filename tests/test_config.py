"""The run record: resolved once by a pure function from flags and recipes, saved, read back; `--help` shows
the recipes' values; a resume must be the same run; checkpoint format versions; log-friendly progress."""

import dataclasses
import io

import pytest
import torch

import train
from mobilenet import create_model, load_checkpoint
from mobilenet.card import ModelCard
from mobilenet.checkpoint import CheckpointError, make_checkpoint, save_checkpoint
from mobilenet.tta import Inference
from tests.conftest import tiny_train_args
from training.config import (
    OPTIONS,
    RunConfig,
    UsageError,
    _value_type,
    check_resume,
    default_text,
    flag_of,
    resolve_config,
)
from training.progress import Progress


def flags(*argv: str) -> dict:
    return vars(train.get_args_parser().parse_args(list(argv)))


def test_resolve_is_pure_and_fills_recipe_values():
    a = resolve_config(flags("--lr", "0.1"), data_root="/d", builtin_data=False)
    b = resolve_config(flags("--lr", "0.1"), data_root="/d", builtin_data=False)
    assert a == b and isinstance(a, RunConfig) and dataclasses.is_dataclass(a)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.lr = 1.0  # type: ignore[misc]
    assert a.lr == 0.1 and a.epochs == RunConfig().epochs == 30 and a.recipe == "scratch"
    assert a.out == "runs/v2-1-224"
    builtin = resolve_config(flags(), data_root="/g", builtin_data=True)
    assert (builtin.resolution, builtin.epochs, builtin.scale_min) == (80, 14, 0.8)
    tuned = resolve_config(
        flags("--pretrained", "x.tflite"),
        data_root="/d",
        builtin_data=False,
        pretrained_model={"arch": "v1", "width_mult": 0.5},
        pretrained_resolution=160,
    )
    assert (tuned.recipe, tuned.arch, tuned.width, tuned.resolution, tuned.lr) == ("finetune", "v1", 0.5, 160, 0.005)
    # Fine-tuning refits on every training image (chosen by bench.crossval); from scratch holds 10% out.
    assert (tuned.val_fraction, a.val_fraction, builtin.val_fraction) == (0.0, 0.1, 0.1)
    # ... and tests by looking twice with flip averaging (also chosen by bench.crossval); from scratch: one pass.
    assert (tuned.look_twice, tuned.test_hflip, a.look_twice, a.test_hflip) == (True, True, False, False)
    # Without a validation split the test curve is drawn every 5 epochs; with one, every epoch (or as asked).
    held_out = resolve_config(
        flags("--pretrained", "x.tflite", "--val-fraction", "0.1"), data_root="/d", builtin_data=False
    )
    asked = resolve_config(flags("--pretrained", "x.tflite", "--eval-every", "2"), data_root="/d", builtin_data=False)
    assert (tuned.eval_every, a.eval_every, held_out.eval_every, asked.eval_every) == (5, 1, 1, 2)
    with pytest.raises(UsageError, match="--width 1.0 does not match --pretrained x.tflite"):
        resolve_config(
            flags("--pretrained", "x.tflite", "--width", "1.0"),
            data_root="/d",
            builtin_data=False,
            pretrained_model={"arch": "v1", "width_mult": 0.5},
        )
    # The record round-trips through its saved (JSON) form.
    assert RunConfig.from_dict(a.to_dict()) == a


def test_help_shows_every_default():
    text = " ".join(train.get_args_parser().format_help().split())
    assert "(default: None)" not in text
    assert "base learning rate (default: 0.05 from scratch, 0.005 with --pretrained)" in text
    # --test-hflip: the fine-tuning recipe's value, and the bird recipe's own
    assert default_text("test_hflip") == "False from scratch, True with --pretrained (False from inat-birds)"
    assert "average with the mirror image (default: False from scratch, True with --pretrained" in text
    assert OPTIONS["lr"].metadata["help"] == "base learning rate"  # recipe values come from RECIPES, not typed


# A value other than the default for each option, and the record value it must give.
def _sample(name: str) -> tuple[list[str], object]:
    f, default = OPTIONS[name], OPTIONS[name].default
    kind = _value_type(name)
    if name == "class_ids":
        return ["--classes", "3-4"], (3, 4)
    if name == "val_fold":
        return ["--val-fold", "1"], 1
    if f.metadata["choices"]:
        value = [c for c in f.metadata["choices"] if c != default][-1]
        return [flag_of(name), value], value
    if kind is bool:
        return [("--no-" if default else "--") + name.replace("_", "-")], not default
    if kind is int:
        return [flag_of(name), str(default + 1)], default + 1
    if kind is float:
        value = default / 2 if default else 0.5
        return [flag_of(name), repr(value)], value
    return [flag_of(name), "somewhere"], "somewhere"  # paths


def test_every_option_is_declared_once_and_reaches_the_record_the_help_and_the_resume_rule():
    parser = train.get_args_parser()
    argv, expected = ["--val-fraction", "0.05"], {}
    for name in OPTIONS:
        action = next(a for a in parser._actions if a.dest == name)
        assert flag_of(name) in action.option_strings and f"(default: {default_text(name)})" in str(action.help)
        # The data root is resolved by train.py (find_data_root); --device-pipeline excludes --color-jitter,
        # --probe-head --transplant-head.
        if name not in ("data_root", "val_fraction", "device_pipeline", "transplant_head"):
            flag, expected[name] = _sample(name)
            argv += flag
    config = resolve_config(vars(parser.parse_args(argv)), data_root="/d", builtin_data=False)
    assert {name: getattr(config, name) for name in expected} == expected


def test_an_option_a_resume_may_change_changes_no_pixel_label_or_weight(tiny_synthetic_root, tmp_path):
    """The resume rule's claim, derived by running: a run with any one resumable option changed (a moved copy of
    the data, workers, the cache folder, batches made on the device, the device, the run folder, evaluation
    frequency, the allocator, progress lines) trains the same weights bit for bit as the plain run, so a resume
    that changes it continues the same run. Every other option is refused by `check_resume`."""
    import shutil

    def trained(name: str, *extra: str) -> dict:
        base = ["--epochs", "2", "--cache", "--cache-dir", str(tmp_path / "cache"), "--no-device-pipeline"]
        train.main(tiny_train_args(tiny_synthetic_root, tmp_path / name, *base, "--no-progress", *extra))
        return torch.load(tmp_path / name / "last.pt", weights_only=True)["model"]

    moved = shutil.copytree(tiny_synthetic_root.parent, tmp_path / "moved") / tiny_synthetic_root.name
    variants = {
        "data_root": ["--data-root", str(moved)],
        "workers": ["--workers", "1"],
        "cache_dir": ["--cache-dir", str(tmp_path / "other-cache")],
        "device_pipeline": ["--device-pipeline"],
        "device": ["--device", "cpu"],
        "out": [],  # every variant writes its own folder
        "eval_every": ["--eval-every", "2"],
        "malloc_tuning": ["--no-malloc-tuning"],
        "progress": ["--progress"],
    }
    assert set(variants) == {name for name, f in OPTIONS.items() if f.metadata["resumable"]}
    plain = trained("plain")
    for name, extra in variants.items():
        weights = trained(name, *extra)
        assert all(torch.equal(weights[k], plain[k]) for k in plain), f"{flag_of(name)} changed the weights"
    record = RunConfig()
    for name in OPTIONS:
        if name not in variants:
            with pytest.raises(UsageError, match=f"the run has {flag_of(name)} "):
                check_resume(record, dataclasses.replace(record, **{name: _sample(name)[1]}), "last.pt")


@pytest.mark.parametrize(
    "change, flag",
    [
        (["--classes", "2-4"], "--classes"),
        (["--resolution", "56"], "--resolution"),
        (["--optimizer", "adamw"], "--optimizer"),
    ],
)
def test_resume_refuses_a_changed_run_naming_the_flag(tiny_synthetic_root, tmp_path, change, flag):
    base = tiny_train_args(tiny_synthetic_root, tmp_path / "r", "--epochs", "1", "--classes", "1-3")
    train.main(base)
    changed = list(base)
    for i in range(0, len(change), 2):
        if change[i] in changed:
            changed[changed.index(change[i]) + 1] = change[i + 1]
        else:
            changed += change[i : i + 2]
    with pytest.raises(UsageError, match=f"--resume .*last.pt: the run has {flag} "):
        train.main([*changed, "--resume"])


def test_checkpoint_format_versions(tmp_path):
    model = create_model("v1", width_mult=0.25, num_classes=3)
    card = ModelCard(("a", "b", "c"), (0.5,) * 3, (0.5,) * 3, 128, Inference(128))
    state = make_checkpoint(model, card=card, config={}, epoch=1, metrics={}, best_val_top1=0.5)
    # A format-1 file (before the run record and the card): no version key, class names and data_config beside
    # the raw options. Still loads, its card made from those fields.
    old = {k: v for k, v in state.items() if k not in ("format_version", "card")}
    old.update(class_names=["a", "b", "c"], data_config={"resolution": 128, "mean": [0.5] * 3, "std": [0.5] * 3})
    old["config"] = {"data_root": "/somewhere", "class_ids": [1, 2, 3], "builtin_data": False, "_private": 1}
    save_checkpoint(old, tmp_path / "v1.pt")
    loaded, loaded_card, info = load_checkpoint(tmp_path / "v1.pt")
    assert torch.equal(loaded.classifier.weight, model.classifier.weight) and loaded_card == card
    assert RunConfig.of_checkpoint(info).class_ids == (1, 2, 3)
    save_checkpoint(dict(state, format_version=99), tmp_path / "v99.pt")
    with pytest.raises(CheckpointError, match="v99.pt: checkpoint format version 99; .* reads 1 to 3"):
        load_checkpoint(tmp_path / "v99.pt")


def test_progress_in_a_log_file_is_summary_lines_not_bar_frames(monkeypatch):
    lines: list[str] = []
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr("training.progress.time.monotonic", lambda: next(clock))
    progress = Progress(range(10), total=10, desc="epoch 1/3", interval=25, terminal=False, write=lines.append)
    for i in progress:
        progress.update(loss=f"{1 / (i + 1):.2f}")
    assert lines and all("\r" not in line and line.startswith("epoch 1/3: ") for line in lines)
    assert len(lines) == 3  # every 25 s of a 10-s-per-step loop, the last step excluded (the epoch line follows)
    # 3 steps in 30 s, 7 to go at that pace: 70 s left in the epoch
    assert lines[0] == "epoch 1/3: 3/10 loss 0.33 eta 1m10s"
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    silent = Progress(range(3), total=3, desc="x", enabled=False)
    assert list(silent) == [0, 1, 2] and stream.getvalue() == ""


def test_validation_is_carved_from_train_stratified_seeded_and_disjoint(tiny_synthetic_root):
    from data.cub import CUB200

    official = CUB200(tiny_synthetic_root, "train")
    fit = CUB200(tiny_synthetic_root, "train", val_fraction=0.34, val_seed=1)
    val = CUB200(tiny_synthetic_root, "val", val_fraction=0.34, val_seed=1)
    ids = lambda d: {s.image_id for s in d.samples}  # noqa: E731
    assert ids(fit) | ids(val) == ids(official) and not ids(fit) & ids(val)
    per_class = {c: sum(1 for s in official.samples if s.label == c) for c in range(4)}
    assert {c: sum(1 for s in val.samples if s.label == c) for c in range(4)} == {
        c: max(1, round(0.34 * n)) for c, n in per_class.items()
    }
    assert ids(CUB200(tiny_synthetic_root, "val", val_fraction=0.34, val_seed=1)) == ids(val)  # seeded
    # The held-out images of a class do not depend on which other classes are loaded.
    only_first = CUB200(tiny_synthetic_root, "val", val_fraction=0.34, val_seed=1, classes=[1])
    assert ids(only_first) == {s.image_id for s in val.samples if s.label == 0}
    with pytest.raises(ValueError, match="split 'val' needs val_fraction > 0"):
        CUB200(tiny_synthetic_root, "val")


def test_cross_validation_folds_partition_each_class_and_name_the_flag_when_wrong(tiny_synthetic_root, tmp_path):
    from data.cub import CUB200

    official = CUB200(tiny_synthetic_root, "train")
    per_class = {c: sum(1 for s in official.samples if s.label == c) for c in range(4)}
    folds = [CUB200(tiny_synthetic_root, "val", val_fraction=0.5, val_seed=3, val_fold=k) for k in (0, 1)]
    held = [[s.image_id for s in f.samples] for f in folds]
    assert sorted(held[0] + held[1]) == sorted(s.image_id for s in official.samples)  # disjoint, cover all
    for fold in folds:  # each class split in halves (the larger half first when its count is odd)
        counts = {c: sum(1 for s in fold.samples if s.label == c) for c in range(4)}
        assert all(abs(counts[c] - per_class[c] / 2) <= 0.5 for c in range(4))
    fit = CUB200(tiny_synthetic_root, "train", val_fraction=0.5, val_seed=3, val_fold=1)
    assert {s.image_id for s in fit.samples} == set(held[0])
    with pytest.raises(ValueError, match="fraction of 1/n"):
        CUB200(tiny_synthetic_root, "val", val_fraction=0.3, val_fold=0)
    with pytest.raises(ValueError, match=r"fold must be in \[0, 2\)"):
        CUB200(tiny_synthetic_root, "val", val_fraction=0.5, val_fold=2)
    with pytest.raises(UsageError, match=r"--val-fold 4 with --val-fraction 0.25: fold must be in \[0, 4\)"):
        train.main(tiny_train_args(tiny_synthetic_root, tmp_path / "r", "--val-fraction", "0.25", "--val-fold", "4"))


def test_the_plotted_schedule_is_the_learning_rate_the_optimizer_used(tiny_synthetic_root, tmp_path):
    out = tmp_path / "r"
    train.main(tiny_train_args(tiny_synthetic_root, out, "--epochs", "3", "--warmup-epochs", "1.5"))
    rows = [__import__("json").loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    config = RunConfig.from_dict(__import__("json").loads((out / "config.json").read_text()))
    steps = rows[0]["step"]
    lrs = config.lr_per_step(steps)
    assert len(lrs) == 3 * steps and lrs[0] == pytest.approx(0.05 * 0.01)  # warm-up starts at 1% of --lr
    for row in rows[:-1]:  # the optimizer's lr when each epoch ended = the schedule at that step
        assert lrs[row["step"]] == pytest.approx(row["lr"], rel=1e-6)
    assert max(lrs) == pytest.approx(0.05, rel=0.05) and rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("fraction", ["0.34", "0"])
def test_best_checkpoint_is_chosen_on_validation_never_on_test(tiny_synthetic_root, tmp_path, fraction):
    out = tmp_path / "r"
    train.main(tiny_train_args(tiny_synthetic_root, out, "--epochs", "3", "--val-fraction", fraction))
    rows = [__import__("json").loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best_epoch = torch.load(out / "best.pt", weights_only=True)["epoch"]
    if fraction == "0":
        assert best_epoch == 3 and not any("val_top1" in r for r in rows)  # no validation: the last epoch
    else:
        assert all({"val_top1", "test_top1"} <= set(r) for r in rows)
        last_best = max(rows, key=lambda r: (r["val_top1"], r["epoch"]))["epoch"]  # ties: the later epoch
        assert best_epoch == last_best
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "val_top1" in header and "test_top1" in header
