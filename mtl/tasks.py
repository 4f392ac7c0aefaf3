"""Task specs (validated structured configs) and task types: head, labels, loss, metrics.

A task is declared in `conf/task/<name>.yaml` under its own name:

    complexity:
      type: regression
      files: {train: ..., val: ...}
      ...

Each task type scores itself so that higher is better; `val/score` is the mean over tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor
from torchmetrics import (
    Accuracy,
    F1Score,
    MeanAbsoluteError,
    MeanSquaredError,
    MetricCollection,
    PearsonCorrCoef,
    R2Score,
    SpearmanCorrCoef,
)

from mtl.errors import ConfigError


@dataclass
class SplitSpec:
    """One file split into train/val(/test) by rows, or by groups of rows that stay together."""

    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    group_column: str | None = None  # rows sharing this value land in the same split


@dataclass
class HeadSpec:
    hidden: int | None = None  # width of an optional hidden layer (GELU); None = linear head
    dropout: float = 0.1


@dataclass
class TaskSpec:
    type: str = MISSING  # regression | classification
    files: dict[str, str] = field(default_factory=dict)  # split (train/val/test) -> path
    file: str | None = None  # or one file plus a split rule
    split: SplitSpec = field(default_factory=SplitSpec)
    format: str | None = None  # csv | tsv | jsonl; None = from the file suffix
    encoding: str = "utf-8"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    labels: list[str] | None = None  # classification: label values as in the file, in class order
    range: list[float] | None = None  # regression: [low, high]; labels outside are bad rows
    train_fraction: float = 1.0  # use this fraction of the training rows (learning curves)
    head: HeadSpec = field(default_factory=HeadSpec)
    loss: str | None = None  # regression: mse | huber | l1; classification: cross_entropy
    loss_weight: float = 1.0


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
        if spec.type not in TASK_TYPES:
            raise ConfigError(f"task.{name}.type: {spec.type!r} is not one of {sorted(TASK_TYPES)}")
        if bool(spec.files) == bool(spec.file):
            raise ConfigError(f"task.{name}: give either `files` (per split) or `file` + `split`")
        if spec.files and "train" not in spec.files:
            raise ConfigError(f"task.{name}.files: needs a 'train' entry, got {list(spec.files)}")
        if not 0 < spec.train_fraction <= 1:
            raise ConfigError(
                f"task.{name}.train_fraction: must be in (0, 1], got {spec.train_fraction}"
            )
        specs[name] = spec
    return specs


class Task:
    """A task type: how many outputs its head has, how labels parse, its loss and metrics."""

    type: str

    def __init__(self, name: str, spec: TaskSpec) -> None:
        self.name = name
        self.spec = spec

    @property
    def num_outputs(self) -> int:
        raise NotImplementedError

    def parse_label(self, raw: str) -> float | int:
        """The label as a number; raises ValueError with the reason for a bad value."""
        raise NotImplementedError

    def fit_labels(self, labels: list[float | int]) -> None:
        """Learn label statistics from the training split (before the first batch)."""

    def loss(self, output: Tensor, labels: Tensor) -> Tensor:
        raise NotImplementedError

    def predict(self, output: Tensor) -> Tensor:
        """Head output -> prediction in label space."""
        raise NotImplementedError

    def metrics(self) -> MetricCollection:
        raise NotImplementedError

    def score(self, values: dict[str, float]) -> float:
        """The task's contribution to val/score (higher is better)."""
        raise NotImplementedError

    def state(self) -> dict:
        """What a checkpoint needs to rebuild this task's head and label mapping."""
        return {"type": self.type}


class RegressionTask(Task):
    """Scalar targets, standardized with the training mean and sd: the head predicts (y - μ) / σ.

    Score: R² = 1 − MSE / Var(y), so 0 is "always predict the mean" and 1 is perfect.
    """

    type = "regression"
    LOSSES = {"mse": F.mse_loss, "huber": F.smooth_l1_loss, "l1": F.l1_loss}

    def __init__(self, name: str, spec: TaskSpec) -> None:
        super().__init__(name, spec)
        loss = spec.loss or "mse"
        if loss not in self.LOSSES:
            raise ConfigError(f"task.{name}.loss: {loss!r} is not one of {sorted(self.LOSSES)}")
        self._loss = self.LOSSES[loss]
        if spec.range is not None and (len(spec.range) != 2 or spec.range[0] >= spec.range[1]):
            raise ConfigError(f"task.{name}.range: must be [low, high], got {spec.range}")
        self.mean, self.std = 0.0, 1.0

    @property
    def num_outputs(self) -> int:
        return 1

    def parse_label(self, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"label {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"label {raw!r} is not a finite number")
        low, high = self.spec.range or (-math.inf, math.inf)
        if not low <= value <= high:
            raise ValueError(f"label {value} is outside the range [{low}, {high}]")
        return value

    def fit_labels(self, labels: list[float | int]) -> None:
        t = torch.tensor(labels, dtype=torch.float64)
        self.mean = float(t.mean())
        self.std = float(t.std()) if len(t) > 1 and float(t.std()) > 0 else 1.0

    def loss(self, output: Tensor, labels: Tensor) -> Tensor:
        target = (labels.float() - self.mean) / self.std
        return self._loss(output.squeeze(-1).float(), target)

    def predict(self, output: Tensor) -> Tensor:
        y = output.squeeze(-1).float() * self.std + self.mean
        return y.clamp(*self.spec.range) if self.spec.range else y

    def metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "rmse": MeanSquaredError(squared=False),
                "mae": MeanAbsoluteError(),
                "pearson": PearsonCorrCoef(),
                "spearman": SpearmanCorrCoef(),
                "r2": R2Score(),
            }
        )

    def score(self, values: dict[str, float]) -> float:
        return values["r2"]

    def state(self) -> dict:
        return {**super().state(), "mean": self.mean, "std": self.std}


class ClassificationTask(Task):
    """Single-label classification with cross-entropy. Score: macro-F1."""

    type = "classification"

    def __init__(self, name: str, spec: TaskSpec) -> None:
        super().__init__(name, spec)
        if (spec.loss or "cross_entropy") != "cross_entropy":
            raise ConfigError(f"task.{name}.loss: classification supports only cross_entropy")
        self.labels: list[str] = list(spec.labels) if spec.labels else []
        self._fixed = bool(spec.labels)  # label set from config; else read from training data
        if self._fixed and len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"task.{name}.labels: duplicate values in {self.labels}")

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def parse_label(self, raw: str) -> int:
        raw = raw.strip()
        if raw in self.labels:
            return self.labels.index(raw)
        if self._fixed:
            raise ValueError(f"label {raw!r} is not in the label set {self.labels}")
        if not raw:
            raise ValueError("label is empty")
        self.labels.append(raw)  # open label set: grows while reading the training split
        return len(self.labels) - 1

    def close_label_set(self) -> None:
        """After the training split: unseen labels in other splits are bad rows."""
        if len(self.labels) < 2:
            raise ConfigError(
                f"task.{self.name}: classification needs at least 2 classes, found {self.labels}"
            )
        self._fixed = True

    def loss(self, output: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(output.float(), labels.long())

    def predict(self, output: Tensor) -> Tensor:
        return output.argmax(-1)

    def metrics(self) -> MetricCollection:
        k = self.num_outputs
        return MetricCollection(
            {
                "accuracy": Accuracy(task="multiclass", num_classes=k),
                "f1": F1Score(task="multiclass", num_classes=k, average="macro"),
            }
        )

    def score(self, values: dict[str, float]) -> float:
        return values["f1"]

    def state(self) -> dict:
        return {**super().state(), "labels": self.labels}


TASK_TYPES: dict[str, type[Task]] = {t.type: t for t in (RegressionTask, ClassificationTask)}


def build_task(name: str, spec: TaskSpec) -> Task:
    return TASK_TYPES[spec.type](name, spec)
