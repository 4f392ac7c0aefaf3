"""Tasks: their specs (validated structured configs) and their types (labels, loss, metrics,
score). A task is declared in `conf/task/<name>.yaml` under its own name:

    complexity:
      type: regression
      files: {train: ..., val: ...}

Types: regression, classification, multilabel, tagging (a tag per word) and mlm (BERT's masked
language model on the task's texts). One file per type; `base.Task` says what each decides.
"""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtl.errors import ConfigError
from mtl.tasks.base import Task
from mtl.tasks.classification import ClassificationTask
from mtl.tasks.metrics import ColumnMetric, MappedRMSE, SpanF1, mapped_rmse
from mtl.tasks.mlm import MaskedLMTask
from mtl.tasks.multilabel import MultilabelTask
from mtl.tasks.regression import RegressionTask
from mtl.tasks.spec import (
    FLOAT32_MAX,
    HeadSpec,
    Label,
    Loss,
    SplitSpec,
    TaskSpec,
    TaskType,
    spec_dict,
)
from mtl.tasks.tagging import TaggingTask
from mtl.tasks.text_stats import STATISTICS, TextFeatures

__all__ = [
    "FLOAT32_MAX", "TASK_TYPES", "ClassificationTask", "ColumnMetric", "HeadSpec", "Label",
    "Loss", "MappedRMSE", "MaskedLMTask", "MultilabelTask", "RegressionTask", "SpanF1",
    "SplitSpec", "TaggingTask", "Task", "TaskSpec", "TaskType", "TextFeatures", "mapped_rmse",
    "parse_task_specs", "spec_dict", "task_from_state", "task_type",
]  # fmt: skip

TASK_TYPES: dict[TaskType, type[Task]] = {
    t.type: t
    for t in (RegressionTask, ClassificationTask, MultilabelTask, TaggingTask, MaskedLMTask)
}


def task_type(spec: TaskSpec) -> type[Task]:
    return TASK_TYPES[spec.type]


def task_from_state(name: str, spec: TaskSpec, state: dict) -> Task:
    """A fitted task as a checkpoint recorded it (`Task.state()`), text statistics included."""
    task = task_type(spec).from_state(name, spec, state)
    if "text_features" in state:
        features = TextFeatures.from_state(state["text_features"])
        task = dataclasses.replace(task, text_features=features)
    return task


def parse_task_specs(tasks: DictConfig | dict) -> dict[str, TaskSpec]:
    """Validate every `task.<name>` entry against TaskSpec; errors name the offending key."""
    if not tasks:
        raise ConfigError("no tasks selected: choose at least one, e.g. task=[demo_complexity]")
    if isinstance(tasks, DictConfig):
        try:
            tasks = OmegaConf.to_container(tasks, resolve=True)  # type: ignore[assignment]
        except OmegaConfBaseException as e:
            raise ConfigError(f"task.{getattr(e, 'full_key', '?')}: {e.msg}") from None
    specs = {}
    for name, raw in tasks.items():
        try:
            merged = OmegaConf.merge(OmegaConf.structured(TaskSpec), raw)
            spec: TaskSpec = OmegaConf.to_object(merged)  # type: ignore[assignment]
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or getattr(e, "key", None) or "?"
            raise ConfigError(f"task.{name}.{key}: {e.msg if hasattr(e, 'msg') else e}") from None
        _check_spec(name, spec)
        specs[name] = spec
    _default_score_weights(specs)
    return specs


def _default_score_weights(specs: dict[str, TaskSpec]) -> None:
    """Fill in unset score weights: each type's default (mlm: 0, an auxiliary task), except
    that tasks which would all weigh 0 (masked LM alone) weigh 1. Explicit zeros stay."""
    weights = {name: task_type(spec).score_weight_of(spec) for name, spec in specs.items()}
    alone = not any(w > 0 for w in weights.values())
    if alone and all(spec.score_weight is not None for spec in specs.values()):
        raise ConfigError("task.*.score_weight: at least one task needs a score_weight > 0")
    for name, spec in specs.items():
        if spec.score_weight is None:
            spec.score_weight = 1.0 if alone else weights[name]


def _check_spec(name: str, spec: TaskSpec) -> None:
    if not spec.dataset and bool(spec.files) == bool(spec.file):
        raise ConfigError(
            f"task.{name}: give either `files` (per split), `file` + `split`, or `dataset`"
        )
    if spec.files and "train" not in spec.files:
        raise ConfigError(f"task.{name}.files: needs a 'train' entry, got {list(spec.files)}")
    split = spec.split
    for key, value, ok, allowed in (
        ("train_fraction", spec.train_fraction, 0 < spec.train_fraction <= 1, "in (0, 1]"),
        ("loss_weight", spec.loss_weight, spec.loss_weight >= 0, ">= 0"),
        ("score_weight", spec.score_weight, (spec.score_weight or 0) >= 0, ">= 0 or null"),
        ("lr_scale", spec.lr_scale, spec.lr_scale > 0, "> 0"),
        ("encoder_lr_scale", spec.encoder_lr_scale, spec.encoder_lr_scale >= 0, ">= 0"),
        ("batch_size", spec.batch_size, (spec.batch_size or 1) > 0, "> 0 or null"),
        ("max_length", spec.max_length, (spec.max_length or 3) > 2, "> 2 or null"),
        ("patience", spec.patience, (spec.patience or 1) > 0, "> 0 or null"),
        ("head.dropout", spec.head.dropout, 0 <= spec.head.dropout < 1, "in [0, 1)"),
        ("head.hidden", spec.head.hidden, (spec.head.hidden or 1) > 0, "> 0 or null"),
        ("split.val_fraction", split.val_fraction, 0 < split.val_fraction < 1, "in (0, 1)"),
        ("split.test_fraction", split.test_fraction, 0 <= split.test_fraction < 1, "in [0, 1)"),
        ("split", f"{split.val_fraction} + {split.test_fraction}",
         split.val_fraction + split.test_fraction < 1, "val_fraction + test_fraction < 1"),
        ("split.folds", split.folds, split.folds == 0 or split.folds >= 2, "0 or >= 2"),
        ("split.fold", split.fold, split.folds == 0 or 0 <= split.fold < split.folds,
         "in [0, folds)"),
        ("split.test_fraction", split.test_fraction,
         split.folds == 0 or split.test_fraction == 0, "0 with folds (a fold is the test)"),
    ):  # fmt: skip
        if not ok:
            raise ConfigError(f"task.{name}.{key}: must be {allowed}, got {value}")
    unknown = [f for f in spec.features if f not in STATISTICS]
    if unknown:
        raise ConfigError(
            f"task.{name}.features: unknown text statistic {unknown[0]!r} (known: "
            f"{', '.join(STATISTICS)})"
        )
    if spec.features and task_type(spec).level != "sentence":
        raise ConfigError(
            f"task.{name}.features: text statistics feed heads with a label per text, not a "
            f"{spec.type.value} task"
        )
    task_type(spec).check_spec(name, spec)
