"""Callbacks: the run's metrics.json (start, best and final validation metrics per task), early
stopping and the progress bar."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, TQDMProgressBar

from mtl.best import Best
from mtl.errors import MtlError
from mtl.io import atomic_write_text

log = logging.getLogger("mtl.train")


def failure_reason(error: BaseException) -> str:
    """An exception as one line: its message (mtl's own errors) or its type and message."""
    lines = str(error).strip().splitlines()
    if isinstance(error, MtlError):
        return lines[0] if lines else type(error).__name__
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class MetricsFile(pl.Callback):
    """Writes `metrics.json` after every validation, so even a stopped run has one.

    {"status": ..., "start": {...}, "final": {...}, "best": {...}, "best_step": s,
    "best_by": {"monitor": ..., "mode": ...}, "history": [...]}, where each entry maps
    val/<task>/<metric> and val/score to values; "best" is the best entry by the run's rule
    (`mtl.best.Best`, the one best.ckpt follows) among the validations of trained states (all
    but the step-0 baseline: the states checkpoints hold). "status" is running, finished,
    stopped (by a signal; resumable) or failed (with "failure": the error, one line), so no
    crashed run looks finished.
    """

    def __init__(self, path: str | Path, best: Best) -> None:
        self.path = Path(path)
        self.best = best
        self.status = "running"
        self.history: list[dict] = []
        self.extra: dict = {}  # added to the file as is (best_checkpoint, skipped_rows, ...)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        # the step-0 baseline is no checkpoint's state: it may not be "best"
        entry = {"step": trainer.global_step, "trained": trainer.global_step > 0, **metrics}
        if self.history and self.history[-1]["step"] == entry["step"]:
            self.history[-1] = entry
        else:
            self.history.append(entry)
        if trainer.is_global_zero:  # every rank keeps the history; one writes it
            self.write()

    def summary(self) -> dict:
        best = self.best.pick([e for e in self.history if e["trained"]] or self.history)
        return {
            "status": self.status,
            "start": self.history[0] if self.history else None,
            "final": self.history[-1] if self.history else None,
            "best": best,
            "best_step": best["step"] if best else None,
            "best_by": {"monitor": self.best.monitor, "mode": self.best.mode},
            **self.extra,
            "history": self.history,
        }

    def state_dict(self) -> dict:
        return {"history": self.history}  # a resumed run keeps the history from step 0

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))

    def write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.summary(), indent=2) + "\n")

    @contextmanager
    def recording_failure(self, write: bool) -> Iterator[None]:
        """Within: any exception marks the run failed with its reason, written to the file
        when `write` (where even that fails, on a full disk, the file is left as it was)."""
        try:
            yield
        except BaseException as e:
            self.status, self.extra["failure"] = "failed", failure_reason(e)
            if write:
                try:
                    self.write()
                except OSError as written:
                    log.warning("%s: the failed status was not written (%s)", self.path, written)
            raise


class EarlyStoppingAfter(EarlyStopping):
    """Lightning's early stopping, counting only the validations after `start_step`: while a
    probe trains the heads alone (`transfer.probe_steps`), their plateau is not the run's end."""

    def __init__(self, *args, start_step: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.start_step = start_step

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step > self.start_step:
            super().on_validation_end(trainer, pl_module)


class TrainingProgressBar(TQDMProgressBar):
    """TQDM's bar with the training loss as of the last training log (`train_summary`, numbers
    the model has already read: showing them costs no host-device sync per step, which a value
    passed to `self.log(prog_bar=True)` does)."""

    def get_metrics(self, trainer, pl_module) -> dict:
        return {**super().get_metrics(trainer, pl_module), **pl_module.train_summary}
