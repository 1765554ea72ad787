"""Where a run stands, and its files: resume from a checkpoint, per-epoch metric rows, `last.pt` / `best.pt`.

`RunState.start` either begins a run (writes `config.json`) or resumes one: it checks the command is the same
run (`training.config.check_resume`), loads the model, optimizer, scheduler, EMA, scaler and RNG states,
and takes the metric rows up to the checkpoint's epoch from the checkpoint itself (so a lost or damaged
`metrics.jsonl` costs nothing). `end_epoch` writes the metric files and the
checkpoints, on rank 0 only. Every file is written to a temporary name and moved into place, so a crash or
a full disk never leaves half a file behind.
"""

import csv
import io
import json
import os
from pathlib import Path

import torch

from atomicfile import write_atomically
from cli import UsageError
from mobilenet.card import ModelCard
from mobilenet.checkpoint import (
    CheckpointError,
    make_checkpoint,
    read_checkpoint,
    refuse_overwrite,
    save_checkpoint,
)
from mobilenet.common import MobileNetBase
from training.config import RunConfig, check_resume
from training.ema import ModelEMA
from training.runtime import barrier, rng_states, set_rng_states

METRIC_FIELDS = [
    "epoch",
    "step",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_top1",
    "val_top5",
    "test_loss",
    "test_top1",
    "test_top5",
    "lr",
    "seconds",
    "images_per_s",
]


def check_resumable(state: dict, epochs: int, path: Path) -> None:
    """UsageError unless `state` holds what a resume needs, at an epoch within the run's `epochs`."""
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= epochs:
        raise CheckpointError(f"--resume {path}: its epoch {epoch!r} is not a whole number in 0..{epochs} (--epochs)")
    for key in ("optimizer", "scheduler", "rng"):
        if not isinstance(state.get(key), dict):
            raise CheckpointError(f"--resume {path}: no {key} state in it (a weights-only file cannot be resumed)")


class RunState:
    """Epoch to start from, metric rows so far and the best validation top-1, for one run folder."""

    def __init__(self, config: RunConfig, card: ModelCard, rank: int, gate: dict | None = None) -> None:
        self.config, self.card, self.rank, self.gate = config, card, rank, gate
        self.out = Path(config.out)
        self.start_epoch, self.best_val_top1 = 0, -1.0
        self.rows: list[dict] = []
        self._lock_fd: int | None = None
        self._extra: dict = {}
        self._recorded_card: ModelCard | None = None

    def start(
        self,
        resume: str | None,
        model: MobileNetBase,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        ema: ModelEMA | None,
        scaler: torch.amp.GradScaler | None,
        extra: dict,
        *,
        force: bool = False,
    ) -> str:
        """Begin (resume None) or resume (a path, or "" for OUT/last.pt); returns a line for the log. Beginning
        in a folder that holds a run is refused unless `force` (`--force`)."""
        self._lock()
        for stale in self.out.glob(".*.tmp"):  # a write killed mid-way (SIGKILL) leaves its temporary file
            stale.unlink(missing_ok=True)
        if resume is not None:
            path = Path(resume or self.out / "last.pt")
            state = read_checkpoint(path)
            check_resume(RunConfig.of_checkpoint(state), self.config, str(path))
            check_resumable(state, self.config.epochs, path)
            saved, names = state["card"]["class_names"], self.card.class_names
            if tuple(saved) != names:  # same flags, other classes on disk
                raise UsageError(
                    f"--resume {path}: the run's {len(saved)} classes are not the "
                    f"{len(names)} classes of {self.config.data_root} (another or a changed data set)"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None and state.get("ema"):
                ema.load_state_dict(state["ema"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_states(state["rng"])
            self.start_epoch, self.best_val_top1 = state["epoch"], state.get("best_val_top1", -1.0)
            history = state.get("history") or self._saved_rows()  # format 1 checkpoints keep no history
            rows = [row for row in history if isinstance(row, dict) and isinstance(row.get("epoch"), int)]
            if len(rows) != len(history):
                raise CheckpointError(f"--resume {path}: its metric history has rows without an epoch number")
            self.rows = [row for row in rows if row["epoch"] <= self.start_epoch]
            message = f"resumed {path} at epoch {self.start_epoch}"
            if self.rank == 0 and self._best_is_stale(path, state):
                save_checkpoint(state, self.out / "best.pt")  # interrupted between the last.pt and best.pt writes
                message += f"; best.pt was behind it and is now epoch {self.start_epoch}'s"
        else:
            # A folder whose run never finished an epoch (no last.pt: only its config.json) holds nothing to lose.
            refuse_overwrite(self.out / "last.pt", force)
            message = f"writing {self.out}"
        barrier()  # every rank has checked the folder before rank 0 writes into it
        self._extra = extra
        self._write_record()
        return message

    def _write_record(self) -> None:
        """`config.json`: the stored run record, the card as it is now, and the model's config."""
        if self.rank == 0:
            record = dict(self.config.stored(), card=self.card.to_dict(), **self._extra)
            write_atomically(self.out / "config.json", json.dumps(record, indent=2) + "\n")
            self._recorded_card = self.card

    def _lock(self) -> None:
        """Hold an exclusive lock on the run folder for this process's life: a second train.py writing the same
        --out would mix two runs' files."""
        if self.rank != 0:
            return
        import fcntl

        self.out.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.out, os.O_RDONLY)  # the folder itself: no lock file left in it
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise UsageError(f"{self.out}: another train.py is writing this run folder (give another --out)") from None

    def close(self) -> None:
        """Release the run folder's lock."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None

    def _best_is_stale(self, last_path: Path, state: dict) -> bool:
        """Whether best.pt should be the resumed checkpoint but is not (missing or an earlier epoch)."""
        best_epoch = state["epoch"] if self.config.val_fraction == 0 else self._best_epoch()
        if best_epoch != state["epoch"] or last_path.resolve() != (self.out / "last.pt").resolve():
            return False
        best = self.out / "best.pt"
        if not best.is_file():
            return True
        try:
            return read_checkpoint(best).get("epoch") != best_epoch
        except CheckpointError:
            return True

    def _best_epoch(self) -> int | None:
        """The epoch best.pt should hold: the best validation top-1 so far, ties to the later epoch."""
        scored = [(row["val_top1"], row["epoch"]) for row in self.rows if row.get("val_top1") is not None]
        return max(scored)[1] if scored else None

    def _saved_rows(self) -> list[dict]:
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return []
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise UsageError(f"{path}:{number}: not a JSON row (a torn write?)") from None
        return rows

    def end_epoch(
        self,
        epoch: int,
        row: dict,
        model: MobileNetBase,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        ema: ModelEMA | None,
        scaler: torch.amp.GradScaler | None,
    ) -> None:
        """Record `row`; on rank 0 write the metric files, `last.pt`, and `best.pt`: the last epoch with the best
        validation top-1, or with no validation split (--val-fraction 0) the last epoch. The test split never
        decides anything."""
        self.rows.append(row)
        top1 = row.get("val_top1")
        # Ties go to the later epoch: a small validation split ties often, and the later weights have seen more
        # of the schedule (on cub20's 60 validation images one image is 1.7 points).
        improved = top1 >= self.best_val_top1 if top1 is not None else self.config.val_fraction == 0
        if top1 is not None and improved:
            self.best_val_top1 = float(top1)
        if self.rank != 0:
            return
        if self.card != self._recorded_card:  # the last epoch gave the card its look-alikes
            self._write_record()
        self.write_metrics()
        state = make_checkpoint(
            model,
            card=self.card,
            gate=self.gate,
            config=self.config.stored(),
            epoch=epoch,
            metrics=row,
            best_val_top1=self.best_val_top1,
            training={
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema else None,
                "scaler": scaler.state_dict() if scaler else None,
                "rng": rng_states(),
                "history": self.rows,
            },
        )
        save_checkpoint(state, self.out / "last.pt")
        if improved:
            save_checkpoint(state, self.out / "best.pt")

    def write_metrics(self) -> None:
        jsonl = "".join(json.dumps(row) + "\n" for row in self.rows)
        table = io.StringIO()
        writer = csv.DictWriter(table, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomically(self.out / "metrics.jsonl", jsonl)
        write_atomically(self.out / "metrics.csv", table.getvalue())
