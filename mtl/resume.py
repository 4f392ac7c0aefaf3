"""Continue a stopped run: `python -m mtl.train resume=<run dir>` (or `resume=<file>.ckpt`).

With a run directory, the run continues in that directory from its `checkpoints/last.ckpt`,
with the overrides it was started with (plus any given now): the same TensorBoard log,
metrics.json continued, `.hydra/` left as it was. With a checkpoint file, a new run
directory starts from that checkpoint (give the same overrides as the stopped run).
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml

from mtl import frozen, run_lock
from mtl.data.fingerprint import check_unchanged, recorded_files_now
from mtl.encoder import Encoder
from mtl.errors import CheckpointError, ConfigError, DataError
from mtl.io import read_json_object
from mtl.tensor_files import load_data
from mtl.trained import checked_description

log = logging.getLogger("mtl.train")
ALLOW_CHANGED_DATA = "resume_allow_changed_data=true"  # the setting that resumes anyway
TRAINING_STATE = ("optimizer_states", "loops", "global_step")  # what Lightning resumes from


def resume_arguments(argv: list[str]) -> list[str]:
    """Command-line overrides with `resume=<run dir>` expanded into the run's own overrides,
    its directory as Hydra's run directory, and no new `.hydra/` files."""
    given = [a for a in argv if a.startswith("resume=")]
    if not given or "-m" in argv or "--multirun" in argv:
        return argv
    run = Path(given[-1].split("=", 1)[1].strip("'\"")).expanduser()
    saved = run / ".hydra" / "overrides.yaml"
    now = [a for a in argv if not a.startswith("resume=")]
    if not run.is_dir() or not saved.is_file():  # a checkpoint file, or an error train() reports
        return [*now, override("resume", run)]
    previous = yaml.safe_load(saved.read_text()) or []
    merged = {_key(o): o for o in previous + now}  # a key given now replaces the saved one
    merged.pop("resume", None)
    given_run = [override("resume", run), override("hydra.run.dir", run)]
    return [*merged.values(), *given_run, "hydra.output_subdir=null"]


def override(key: str, value: object) -> str:
    """`key='value'` for Hydra's override grammar, quoted: a sweep job's directory, such as
    `3_seed=1`, holds '=' (and may hold ',' or brackets)."""
    quoted = str(value).replace("'", "\\'")
    return f"{key}='{quoted}'"


def _key(text: str) -> str:
    return text.split("=", 1)[0].lstrip("+~")


def resume_checkpoint(
    resume: str | None, tasks: list[str], allow_changed_data: bool = False, max_steps: int = -1
) -> Path | None:
    """The checkpoint `resume` names, checked before training: an existing run directory
    (its checkpoints/last.ckpt) or checkpoint file, written by mtl for the same tasks, whose
    data files are as it recorded them (or `allow_changed_data`: a warning per change), and
    short of `max_steps` (trainer.max_steps; -1: no limit) unless it is a run directory whose
    run did not finish."""
    if not resume:
        return None
    path = Path(resume).expanduser()
    if path.is_dir():
        run_lock.check_free(path, "resume")  # not a run that is still writing it
        path = path / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise ConfigError(f"resume={resume}: the directory has no checkpoints/last.ckpt")
    elif not path.is_file():
        raise ConfigError(
            f"resume={resume}: no such run directory or checkpoint file (give the directory of "
            "the run to continue, or a .ckpt file)"
        )
    checkpoint = load_data(path)
    try:
        description = checked_description(path, checkpoint)
    except CheckpointError as e:
        raise ConfigError(f"resume={resume}: {e}") from None
    lacking = [key for key in TRAINING_STATE if key not in checkpoint]
    if lacking:
        raise ConfigError(
            f"resume={resume}: {path} holds the model but not its training state "
            f"({', '.join(lacking)}): start a new run from it with encoder.init_from instead"
        )
    if frozen.REFERENCE in checkpoint:  # weights it stores once beside it, checked now
        frozen.frozen_file(path, checkpoint[frozen.REFERENCE])
    trained_tasks = list(description.get("tasks", {}))
    if sorted(trained_tasks) != sorted(tasks):
        raise ConfigError(
            f"resume={resume}: the checkpoint trained tasks {trained_tasks}, this run has "
            f"{tasks}; resume with the same task=[...]"
        )
    try:
        check_resumed_data(description.get("data") or {}, allow_changed_data)
    except DataError as e:
        raise ConfigError(f"resume={resume}: {e}") from None
    step = description.get("step")
    if isinstance(step, int) and 0 <= max_steps <= step and not _unfinished_run(resume):
        raise ConfigError(
            f"resume={resume}: the checkpoint is at step {step} and trainer.max_steps={max_steps}"
            ": nothing is left to train; raise trainer.max_steps to train on"
        )
    return path


def _unfinished_run(resume: str) -> bool:
    """Whether `resume` is a run directory whose run did not finish (killed after its last
    step, say): resumed, it finishes, with no step to train."""
    metrics = Path(resume).expanduser() / "metrics.json"
    return metrics.is_file() and read_json_object(metrics, ConfigError).get("status") != "finished"


SHAPE_KEYS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers",
              "num_attention_heads", "intermediate_size", "max_position_embeddings")  # fmt: skip


def check_resumed_encoder(resume: str, path: Path, encoder: Encoder) -> None:
    """The checkpoint's encoder has the shape this run built (else its weights fail to load
    deep inside Lightning): one error naming what differs."""
    saved = load_data(path, mmap=True)["mtl_model"].get("encoder") or {}
    built = encoder.cfg.to_hf()
    differ = [f"{key} {saved[key]} (this run: {built[key]})" for key in SHAPE_KEYS
              if key in saved and key in built and saved[key] != built[key]]  # fmt: skip
    if differ:
        raise ConfigError(
            f"resume={resume}: the checkpoint's encoder has {', '.join(differ)}; resume with "
            "the encoder settings it was trained with (encoder=..., encoder.keep_layers=...)"
        )


def check_resumed_data(recorded: dict, allow_changed_data: bool) -> None:
    """Refuse (DataError) data files changed since a run recorded them ({task: {split:
    summary}}), or with `allow_changed_data` log a warning per change (a run's resume, and a
    resumed cross-validation's finished folds)."""
    now = recorded_files_now(recorded)
    for change in check_unchanged(recorded, now, allow_changed_data, ALLOW_CHANGED_DATA):
        log.warning("%s; resuming anyway (%s)", change, ALLOW_CHANGED_DATA)
