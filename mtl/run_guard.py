"""A Hydra callback that refuses to start a run or sweep in a directory that already holds one.

Hydra writes `.hydra/config.yaml` before the job starts, so the check must run earlier than
the job itself: at `on_run_start` / `on_multirun_start`, when nothing has been written yet.
Hydra turns exceptions from callbacks into warnings, so the refusal exits the process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class RefuseExistingRun(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_if_used(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_if_used(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


def refuse_if_used(path: Path, key: str) -> None:
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return  # a DDP worker started by Lightning joins its launcher's run directory
    if path.is_dir() and any(path.iterdir()):
        sys.exit(
            f"error: {path} already holds a run; refusing to overwrite it (choose another {key})"
        )
