"""train.py end to end on a tiny generated set: files, checkpoints, determinism, resume after a real kill,
options from a config file, invalid options, and two-process DistributedDataParallel."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import train
from data.cub import CUB200
from mobilenet import create_model
from mobilenet.checkpoint import CheckpointError, load_checkpoint
from tests.conftest import REPO, tiny_train_args

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def tiny_args(root: Path, out: Path, *extra: str) -> list[str]:
    return tiny_train_args(root, out, *extra)


def test_run_writes_its_files_and_checkpoints_rebuild_the_model(tiny_synthetic_root, tmp_path):
    out = tmp_path / "run"
    final = train.main(tiny_args(tiny_synthetic_root, out, "--ema", "0.9"))
    assert {"config.json", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt"} <= {p.name for p in out.iterdir()}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["test_top1"] == final["test_top1"]
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step,train_loss")
    config = json.loads((out / "config.json").read_text())
    assert config["model_config"]["arch"] == "v2" and config["model_config"]["width_mult"] == 0.25
    assert config["lr"] == 0.05 and config["card"]["resolution"] == 48
    model, card, info = load_checkpoint(out / "last.pt")
    assert not model.training and info["epoch"] == 2 and len(card.class_names) == 4
    assert card.resolution == 48 and info["metrics"]["test_top1"] == final["test_top1"]
    # The rebuilt model reproduces the recorded test accuracy.
    from mobilenet.preprocess import eval_transform

    test_set = CUB200(tiny_synthetic_root, "test", eval_transform(48, mean=card.mean, std=card.std))
    loader = torch.utils.data.DataLoader(test_set, batch_size=64)
    assert train.evaluate(model, loader, torch.device("cpu"))["test_top1"] == pytest.approx(final["test_top1"])
    raw = torch.load(out / "last.pt", weights_only=True)
    assert {"optimizer", "scheduler", "ema", "rng", "config", "card"} <= set(raw)


def test_same_seed_same_metrics(tiny_synthetic_root, tmp_path):
    a = train.main(tiny_args(tiny_synthetic_root, tmp_path / "a", "--mixup", "0.2", "--cutmix", "1.0"))
    b = train.main(tiny_args(tiny_synthetic_root, tmp_path / "b", "--mixup", "0.2", "--cutmix", "1.0"))
    for key in ("train_loss", "train_acc", "test_loss", "test_top1"):
        assert a[key] == b[key]
    wa, wb = (
        torch.load(tmp_path / "a" / "last.pt", weights_only=True),
        torch.load(tmp_path / "b" / "last.pt", weights_only=True),
    )
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])


def _run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def test_resume_after_a_real_kill_ends_identical(tiny_synthetic_root, tmp_path):
    common = tiny_args(tiny_synthetic_root, tmp_path / "x", "--ema", "0.9")
    common[common.index("--epochs") + 1] = "4"
    reference = train.main(_with_out(common, tmp_path / "straight"))
    killed_out = tmp_path / "killed"
    process = _run_cli(_with_out(common, killed_out))
    deadline = time.time() + 240
    while time.time() < deadline:
        metrics = killed_out / "metrics.jsonl"
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 1 and (killed_out / "last.pt").exists():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len((killed_out / "metrics.jsonl").read_text().splitlines())
    assert done < 4, "the run finished before it could be killed"
    resumed = train.main([*_with_out(common, killed_out), "--resume"])
    assert resumed["test_top1"] == reference["test_top1"] and resumed["train_loss"] == reference["train_loss"]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(killed_out / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["ema"]["module"][k], b["ema"]["module"][k]) for k in a["model"])
    rows_a = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (killed_out / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(rows_a) == strip(rows_b)


def _with_out(args: list[str], out: Path) -> list[str]:
    args = list(args)
    args[args.index("--out") + 1] = str(out)
    return args


def test_config_file_and_command_line_override(tiny_synthetic_root, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 1\nlr: 0.02\nlabel-smoothing: 0.2\nschedule: constant\nclasses: 1-2\n")
    args = _without(tiny_args(tiny_synthetic_root, tmp_path / "r"), "--epochs", "--lr")
    train.main([*args, "--config", str(config), "--lr", "0.03"])
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert (saved["epochs"], saved["lr"], saved["label_smoothing"], saved["schedule"]) == (1, 0.03, 0.2, "constant")
    assert saved["class_ids"] == [1, 2]  # the file's text is read as the flag's would be
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learning_rate": 1}))
    with pytest.raises(train.UsageError, match="unknown option 'learning_rate'"):
        train.main(["--config", str(bad)])
    bad.write_text(json.dumps({"label_smoothing": [0.1], "lr": 1}))  # lr 1, an int for a float, is fine; a list is not
    with pytest.raises(train.UsageError, match=r"--label-smoothing must be float, got \[0.1\]"):
        train.main([*args, "--config", str(bad)])


def _without(args: list[str], *flags: str) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in flags:
            skip = True
            continue
        out.append(a)
    return out


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--lr", "-1"], "--lr"),
        (["--width", "0"], "--width"),
        (["--schedule", "linear"], "--schedule"),
        (["--epochs", "-1"], "--epochs"),
        (["--classes", "3-1"], "--classes"),
        (["--pretrained", "nothing.tflite"], "--pretrained"),
        (["--amp", "fp16", "--device", "cpu"], "--amp fp16"),
    ],
)
def test_invalid_values_stop_with_the_flag_named(tiny_synthetic_root, tmp_path, capsys, extra, flag):
    try:
        train.main([*tiny_args(tiny_synthetic_root, tmp_path / "r"), *extra])
    except train.UsageError as e:  # refused when the run is resolved
        message = str(e)
    except SystemExit as e:  # refused by the parser (a choice, a value that does not parse): usage, then one line
        assert e.code == 2
        message = capsys.readouterr().err.strip().splitlines()[-1]
    else:
        pytest.fail(f"{extra} was accepted")
    assert flag in message
    assert not (tmp_path / "r").exists()  # no work done


def test_cli_error_is_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "--data-root", str(tmp_path / "none")], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"train.py: error: --data-root {tmp_path / 'none'}: no images.txt there (the folder holding CUB's files)"
    ]


def test_resume_of_another_architecture_is_refused(tiny_synthetic_root, tmp_path):
    out = tmp_path / "r"
    train.main(_without(tiny_args(tiny_synthetic_root, out), "--epochs") + ["--epochs", "1"])
    with pytest.raises(train.UsageError, match="--resume .*arch v2, this command v1"):
        train.main(
            [
                *_without(tiny_args(tiny_synthetic_root, out), "--arch", "--width"),
                "--arch",
                "v1",
                "--width",
                "0.25",
                "--resume",
            ]
        )


def test_checkpoint_errors_are_one_line(tmp_path, tiny_synthetic_root):
    out = tmp_path / "r"
    train.main(_without(tiny_args(tiny_synthetic_root, out), "--epochs") + ["--epochs", "1"])
    data = (out / "last.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="foreign.pt: not a checkpoint of this project"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_freeze_epochs_train_only_the_classifier(tiny_synthetic_root, tmp_path):
    out = tmp_path / "r"
    args = _without(tiny_args(tiny_synthetic_root, out), "--epochs") + ["--epochs", "1", "--freeze-epochs", "1"]
    torch.manual_seed(0)
    train.main(args)
    state = torch.load(out / "last.pt", weights_only=True)["model"]
    from mobilenet import create_model

    torch.manual_seed(0)  # train.py seeds with --seed 0 before building the model
    fresh = create_model("v2", width_mult=0.25, num_classes=4).state_dict()
    assert torch.equal(state["features.3.conv_dw.conv.weight"], fresh["features.3.conv_dw.conv.weight"])
    assert torch.equal(state["features.3.conv_dw.bn.running_mean"], fresh["features.3.conv_dw.bn.running_mean"])
    assert not torch.equal(state["classifier.weight"], fresh["classifier.weight"])


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_two_process_ddp_on_cpu(tiny_synthetic_root, tmp_path):
    out = tmp_path / "ddp"
    # --cache: rank 0 builds the packed cache while rank 1 waits at a barrier (they used to race on one temp file).
    args = _without(tiny_args(tiny_synthetic_root, out), "--epochs") + ["--epochs", "2", "--cache"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["tests/ddp_train.py", *args]

    def errors(result: subprocess.CompletedProcess) -> str:  # each rank's own error line, not only torchrun's
        return "\n".join(line for line in result.stderr.splitlines() if "Error" in line)

    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + errors(result)
    assert "weights identical on all 2 ranks: True" in result.stdout
    assert "2 process(es)" in result.stdout
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2  # one writer
    assert sorted(p.name for p in out.iterdir()) == [
        "best.pt",
        "config.json",
        "last.pt",
        "metrics.csv",
        "metrics.jsonl",
    ]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    # The same command again is refused on every rank, cleanly (no rank left waiting at a barrier).
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode != 0
    refusals = [line for line in again.stderr.splitlines() if "last.pt already exists: give --force" in line]
    assert {line.split("]")[0] for line in refusals} >= {"[rank0", "[rank1"}, errors(again)


def test_options_have_their_observable_effect(tiny_synthetic_root, tmp_path):
    args = _without(tiny_args(tiny_synthetic_root, tmp_path / "r"), "--epochs") + [
        "--epochs",
        "1",
        "--amp",
        "bf16",
        "--channels-last",
        "--optimizer",
        "rmsprop",
        "--schedule",
        "onecycle",
        "--grad-clip",
        "1.0",
        "--color-jitter",
        "0.3",
        "--crop",
        "bbox",
        "--classes",
        "1-3",
        "--cache",
        "--ema",
        "0.9",
    ]
    final = train.main(args)
    raw = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    # --classes 1-3: a 3-way head named after CUB's classes 1 to 3 of the set.
    assert raw["model"]["classifier.weight"].shape[0] == 3 and len(raw["card"]["class_names"]) == 3
    # --optimizer rmsprop: RMSprop's own state for every trained parameter.
    assert raw["optimizer"]["state"] and all("square_avg" in s for s in raw["optimizer"]["state"].values())
    # --schedule onecycle: the run ends at lr / 25 / 1e4, as torch's OneCycleLR with its defaults.
    assert final["lr"] == pytest.approx(0.05 / 25 / 1e4, rel=1e-6)
    # --ema 0.9: the evaluated (EMA) weights are not the live ones.
    floats = [k for k, v in raw["model"].items() if v.is_floating_point()]
    assert any(not torch.equal(raw["ema"]["module"][k], raw["model"][k]) for k in floats)
    # --crop bbox: the run's images, as every later command rebuilds them from the record, are the birds' boxes.
    # (--cache: the same crops as from the JPEGs, tests/test_prepare.py; --amp bf16 and --channels-last: below.)
    from training.config import RunConfig

    run = RunConfig.of_checkpoint(load_checkpoint(tmp_path / "r" / "last.pt")[2])
    cropped, whole = run.dataset("train", None), run.dataset("train", None, crop="none")
    for i in range(3):
        x, y, w, h = whole.samples[i].box
        assert cropped[i][0].shape[-2:].numel() < whole[i][0].shape[-2:].numel()
        assert abs(cropped[i][0].shape[-1] - w) <= 2 * cropped.bbox_margin * w + 2
    with pytest.raises(train.UsageError, match="--amp fp16 needs CUDA"):
        train.main([*_without(args, "--amp"), "--amp", "fp16"])


def test_one_epoch_clips_the_gradient_and_runs_bf16_channels_last():
    from training.config import RunConfig

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 48, 48), torch.randint(0, 3, (8,)))
    loader = torch.utils.data.DataLoader(data, batch_size=4)

    def gradient_norms(config: RunConfig) -> tuple[list[float], dict]:
        model = create_model("v2", width_mult=0.25, num_classes=3)
        model.to(memory_format=torch.channels_last)
        seen: dict = {}
        model.features[1].register_forward_hook(
            lambda m, i, o: seen.update(nhwc=i[0].is_contiguous(memory_format=torch.channels_last), dtype=o.dtype)
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        norms: list[float] = []

        def record_norm(*_):
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            norms.append(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item())

        optimizer.register_step_pre_hook(record_norm)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        from training.config import precision

        amp, channels_last = precision(config, "cpu")
        train.train_one_epoch(
            model,
            loader,
            optimizer,
            scheduler,
            config,
            torch.device("cpu"),
            epoch=0,
            num_classes=3,
            show=False,
            amp=amp,
            channels_last=channels_last,
        )
        return norms, seen

    free, _ = gradient_norms(RunConfig(epochs=1))
    clipped, seen = gradient_norms(RunConfig(epochs=1, grad_clip=0.01, amp="bf16", channels_last=True))
    assert len(clipped) == 2 and min(free) > 0.01  # without clipping the norm is above the bound ...
    assert max(clipped) <= 0.01 * (1 + 1e-3)  # ... and --grad-clip 0.01 bounds it
    assert seen == {"nhwc": True, "dtype": torch.bfloat16}


def test_channels_last_the_cpu_default_computes_nchw_s_gradients_to_a_percent():
    """NHWC is the CPU default (`training.config.precision`). Against the float64 NCHW gradients of one training
    step, NCHW float32 is within 0.1% and NHWC float32 (oneDNN's channels_last kernels) within 5% of the whole
    gradient, every tensor of any size pointing the same way (cosine > 0.999): measured on this CPU, NHWC's
    backward is 10-1000 times less precise than NCHW's (worst on batch-norm parameters), far below the noise of a
    32-image batch but not bit-for-bit rounding. And the model really runs NHWC."""
    from training.config import RunConfig, precision

    assert precision(RunConfig(), "cpu") == ("none", True) and precision(RunConfig(), "mps") == ("none", False)
    torch.manual_seed(0)
    images, labels = torch.randn(4, 3, 64, 64), torch.randint(0, 5, (4,))
    start = create_model("v2", width_mult=0.5, num_classes=5).state_dict()

    def gradients(dtype: torch.dtype, channels_last: bool) -> tuple[dict, bool]:
        model = create_model("v2", width_mult=0.5, num_classes=5).to(dtype)
        model.load_state_dict(start)
        x = images.to(dtype)
        if channels_last:
            model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(1)  # the same dropout mask
        F.cross_entropy(model(x), labels).backward()
        nhwc = model.features[0].conv.weight.grad.is_contiguous(memory_format=torch.channels_last)
        return {n: p.grad.double() for n, p in model.named_parameters()}, nhwc

    exact, _ = gradients(torch.float64, False)
    nchw, nhwc_a = gradients(torch.float32, False)
    nhwc, nhwc_b = gradients(torch.float32, True)
    assert not nhwc_a and nhwc_b
    flat = {
        name: torch.cat([g[n].flatten() for n in exact])
        for name, g in (("exact", exact), ("nchw", nchw), ("nhwc", nhwc))
    }

    def error(name: str) -> float:
        return ((flat[name] - flat["exact"]).norm() / flat["exact"].norm()).item()

    assert error("nchw") < 1e-3 and error("nhwc") < 0.05
    sizable = [n for n, g in exact.items() if g.norm() > 1e-3 * flat["exact"].norm()]
    assert min(F.cosine_similarity(nhwc[n].flatten(), exact[n].flatten(), dim=0).item() for n in sizable) > 0.999
