"""Hydra callbacks that settle a run's directory before Hydra writes anything for it.

Hydra writes `.hydra/config.yaml` before the job starts, so these checks run earlier than the
job itself, at `on_run_start` / `on_multirun_start`: the directory must not hold another run
(unless this run resumes it) and is then claimed by its lock (mtl/run_lock.py: of two runs
started together only one trains there; a resume takes over the lock its killed run left), and
the composed config must pass mtl's checks (unknown keys, ranges, `_target_`; see
mtl/validation.py). Hydra turns exceptions from
callbacks into warnings, so a refusal exits the process with one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, read_write

from mtl import run_lock
from mtl.errors import MtlError, describe_os_error
from mtl.resume import override
from mtl.validation import check_config


class OneSweepDir(Callback):
    """Hydra composes each sweep job's config anew, `hydra.sweep.dir` included, so jobs whose
    `name` differs (`-m experiment=a,b`) would land in different directories. This fixes the
    sweep's directory, as resolved when the sweep starts, as an override of every job."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with read_write(config.hydra.overrides):
            config.hydra.overrides.hydra.append(override("hydra.sweep.dir", config.hydra.sweep.dir))


class RefuseExistingRun(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(config.hydra.run.dir)
        resumes = config.get("resume") and Path(config.resume).resolve() == run_dir.resolve()
        if not resumes:
            refuse_if_used(run_dir, "hydra.run.dir")
        _exit_on_error(run_lock.claim, run_dir, take_stale=bool(resumes))
        _exit_on_error(check_config, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        refuse_if_used(sweep_dir, "hydra.sweep.dir")
        _exit_on_error(run_lock.claim, sweep_dir)  # each job's directory is its own, inside
        _exit_on_error(check_config, config)  # the shared settings; each job checks its own


def _exit_on_error(check, *args: object, **kwargs: object) -> None:
    try:
        check(*args, **kwargs)
    except MtlError as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # Hydra would turn it into a warning and run on, unlocked
        sys.exit(f"error: {describe_os_error(e, args[0] if args else None)}")


def refuse_if_used(path: Path, key: str) -> None:
    """Stop if `path` is a file, or a directory that holds a run (or a sweep's runs). A
    directory a failed run left before it trained (only .hydra/ and a log) may be reused."""
    if run_lock.ddp_worker():
        return  # a DDP worker started by Lightning joins its launcher's run directory
    if path.exists() and not path.is_dir():
        sys.exit(f"error: {key}={path} is an existing file, not a directory")
    if path.is_dir() and holds_run(path):
        if run_lock.holder(path / run_lock.LOCK_NAME)[1]:  # running: no resume to suggest
            sys.exit(f"error: {key}={path}: {run_lock.describe(path / run_lock.LOCK_NAME)}")
        sys.exit(
            f"error: {path} already holds a run; refusing to overwrite it (choose another {key}, "
            f"or continue it with resume={path})"
        )


def holds_run(path: Path) -> bool:
    """Whether a directory holds what a run produces (metrics, checkpoints, logs), itself or
    in its subdirectories (a sweep)."""
    produced = ("metrics.json", "checkpoints", "tensorboard", "csv", "multirun.yaml")
    return any(next(path.rglob(name), None) is not None for name in produced)
