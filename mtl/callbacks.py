"""Callbacks: the run's metrics.json (start, best and final validation metrics per task)."""

from __future__ import annotations

import json
from pathlib import Path

import pytorch_lightning as pl

from mtl.io import atomic_write_text


class MetricsFile(pl.Callback):
    """Writes `metrics.json` after every validation, so even a stopped run has one.

    {"start": {...}, "final": {...}, "best": {...}, "best_step": s, "history": [...]}, where
    each entry maps val/<task>/<metric> and val/score to values; "best" is the entry with the
    highest val/score among the validations during training (those ModelCheckpoint saw).
    """

    def __init__(self, path: str | Path, monitor: str = "val/score") -> None:
        self.path = Path(path)
        self.monitor = monitor
        self.history: list[dict] = []
        self.extra: dict = {}  # added to the file as is (best_checkpoint, skipped_rows)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        # ModelCheckpoint acts only inside fit: only those validations may be "best"
        entry = {"step": trainer.global_step, "in_fit": trainer.state.fn == "fit", **metrics}
        if self.history and self.history[-1]["step"] == entry["step"]:
            self.history[-1] = entry
        else:
            self.history.append(entry)
        if trainer.is_global_zero:  # every rank keeps the history; one writes it
            self.write()

    def summary(self) -> dict:
        candidates = [e for e in self.history if e["in_fit"]] or self.history
        best = max(candidates, key=lambda e: e.get(self.monitor, float("-inf")))
        return {
            "start": self.history[0],
            "final": self.history[-1],
            "best": best,
            "best_step": best["step"],
            **self.extra,
            "history": self.history,
        }

    def state_dict(self) -> dict:
        return {"history": self.history}  # a resumed run keeps the history from step 0

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))

    def write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.summary(), indent=2) + "\n")
