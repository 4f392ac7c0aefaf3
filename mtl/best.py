"""What "best" means in a run: one monitored metric and whether higher or lower is better.

`callbacks.checkpoints.monitor` and `.mode` (default: val/score, max) decide it, and everything
that speaks of the best state follows this one rule: best.ckpt, metrics.json's `best` and
`best_step`, the printed summary, early stopping's default, the test split's scoring (of
best.ckpt) and the value a sweeper optimizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig

from mtl.errors import ConfigError

MODES = ("max", "min")


@dataclass(frozen=True)
class Best:
    monitor: str = "val/score"  # any logged metric
    mode: str = "max"  # max: higher is better; min: lower is better

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"callbacks.checkpoints.mode: 'max' or 'min', got {self.mode!r}")

    @classmethod
    def of(cls, cfg: DictConfig) -> Best:
        """The run's rule, from its checkpoint callback's settings (the defaults without one)."""
        checkpoints = cfg.callbacks.get("checkpoints") or {}
        return cls(checkpoints.get("monitor", cls.monitor), checkpoints.get("mode", cls.mode))

    def improves(self, value: float, best: float | None) -> bool:
        """Whether `value` beats the best so far (None: nothing yet); ties do not."""
        return best is None or (value > best if self.mode == "max" else value < best)

    def pick(self, entries: list[dict]) -> dict | None:
        """The first entry with the best finite monitored value (None if none has one)."""
        best = None
        for entry in entries:
            value = entry.get(self.monitor, math.nan)
            if math.isfinite(value) and self.improves(value, best[self.monitor] if best else None):
                best = entry
        return best
