"""How a run's checkpoints are written, and how it stops when asked to.

- `AtomicCheckpointIO` writes every checkpoint to a temporary file beside its target, fsyncs
  it, renames it onto the target and fsyncs the directory: a crash leaves the previous file
  or the new one, never half of one (the temporary file of a killed write is removed when the
  run is resumed). Weights frozen for the whole run go once into a file beside the
  checkpoints, which refer to it (mtl/frozen.py).
- `RunCheckpoints` keeps `last.ckpt` the latest state (at every validation during training,
  every `every_n_steps` steps or `every_n_minutes` minutes, and at the end) and makes
  `best.ckpt` a hard link to it when the monitored metric improves (`mtl.best.Best`: the
  run's one rule for "best"): one write per validation.
  A non-finite score stops the run and is never saved.
- `GracefulStop` turns SIGTERM (what a cluster scheduler sends) and SIGINT (Ctrl-C) into a
  stop after the current step, so `last.ckpt` is written and the run can be resumed; a
  second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint

from mtl.best import Best
from mtl.errors import MtlError
from mtl.frozen import PATTERN, FrozenStore, load_checkpoint
from mtl.io import atomic_write, fsync_directory, remove_stale_temporaries

LAST, BEST = "last.ckpt", "best.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically, their frozen weights once beside them (mtl/frozen.py),
    and read back as data."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = FrozenStore()

    def save_checkpoint(self, checkpoint: dict, path: Any, storage_options: Any = None) -> None:
        checkpoint = self.frozen.split(checkpoint, Path(path).parent)
        atomic_write(path, lambda tmp: _save(checkpoint, tmp, Path(path)))

    def load_checkpoint(
        self, path: Any, map_location: Any = None, weights_only: bool | None = None
    ) -> dict:
        return load_checkpoint(path)  # always as data, on the CPU

    def remove_checkpoint(self, path: Any) -> None:
        Path(path).unlink(missing_ok=True)


def _save(checkpoint: dict, tmp: Path, target: Path) -> None:
    """torch.save through a Python file, so a failed write (a full disk) is the OSError with
    its errno, naming `target`, rather than a RuntimeError of torch's own writer."""
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
    except OSError as e:
        raise OSError(e.errno, f"{e.strerror} (writing a checkpoint)", str(target)) from None


class RunCheckpoints(Checkpoint):
    def __init__(
        self,
        dirpath: str | Path,
        monitor: str = Best.monitor,
        mode: str = Best.mode,
        every_n_steps: int = 0,
        every_n_minutes: float | None = 10,
    ) -> None:
        if every_n_steps < 0 or (every_n_minutes is not None and every_n_minutes <= 0):
            raise MtlError("callbacks.checkpoints: every_n_steps >= 0 and every_n_minutes > 0")
        self.dirpath = Path(dirpath)
        self.best = Best(monitor, mode)
        self.every_n_steps, self.every_n_minutes = every_n_steps, every_n_minutes
        self.best_score: float | None = None
        self.best_step: int | None = None
        self._saved_step: int | None = None  # step of the state last.ckpt holds
        self._saved_at = time.monotonic()
        self._seen_step: int | None = None

    @property
    def last_model_path(self) -> Path:
        return self.dirpath / LAST

    @property
    def best_model_path(self) -> str:
        """The best checkpoint's path ('' before the first validation during training)."""
        return str(self.dirpath / BEST) if self.best_step is not None else ""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.is_global_zero:
            for name in ("*.ckpt", PATTERN):  # left by a killed run
                remove_stale_temporaries(self.dirpath, name)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        monitor = self.best.monitor
        score = trainer.callback_metrics.get(monitor)
        if score is None:
            logged = ", ".join(sorted(k for k in trainer.callback_metrics if k.startswith("val/")))
            raise MtlError(
                f"callbacks.checkpoints.monitor: no metric {monitor!r} was logged (validation "
                f"logs: {logged})"
            )
        score = float(score)
        if not math.isfinite(score):
            bad = sorted(k for k, v in trainer.callback_metrics.items()
                         if k.startswith("val/") and not math.isfinite(float(v)))  # fmt: skip
            raise MtlError(
                f"{monitor} is {score} at step {trainer.global_step} (not finite: "
                f"{', '.join(bad)}); the run stopped, and this state was not saved"
            )
        training = trainer.state.fn == "fit"
        if not training and self._saved_step != trainer.global_step:
            return  # the step-0 baseline: no training state to keep
        improved = self.best.improves(score, self.best_score)
        if improved:
            self.best_score, self.best_step = score, trainer.global_step
        if training:
            self._save_last(trainer)
        # else the validation after training's last step, which last.ckpt already holds
        if improved and trainer.is_global_zero:
            link(self.last_model_path, self.dirpath / BEST)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, seen, self._seen_step = trainer.global_step, self._seen_step, trainer.global_step
        if step == seen:
            return  # inside an accumulation window: no optimizer step, nothing to save yet
        due_steps = self.every_n_steps and step % self.every_n_steps == 0
        minutes = (time.monotonic() - self._saved_at) / 60
        due_time = self.every_n_minutes is not None and minutes >= self.every_n_minutes
        if due_steps or due_time:
            self._save_last(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._saved_step != trainer.global_step:
            self._save_last(trainer)

    def _save_last(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.last_model_path, weights_only=False)  # full: resumable
        self._saved_step, self._saved_at = trainer.global_step, time.monotonic()

    def state_dict(self) -> dict:
        return {"best_score": self.best_score, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.best_score, self.best_step = state["best_score"], state["best_step"]


def link(source: Path, target: Path) -> None:
    """Make `target` name the same file as `source` (a hard link; a copy where the file
    system has none), replacing `target` atomically."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        atomic_write(tmp, lambda t: t.write_bytes(source.read_bytes()))
    os.replace(tmp, target)
    fsync_directory(target.parent)


class GracefulStop(pl.Callback):
    """SIGTERM or SIGINT during training: finish the step, stop, and remember the signal."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}
        self._seen_step: int | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig in self.SIGNALS:  # after Lightning's own handlers, which these replace
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now
        self.received = signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, seen, self._seen_step = trainer.global_step, self._seen_step, trainer.global_step
        if step == seen:
            return  # stop only after an optimizer step, never inside an accumulation window
        if trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
