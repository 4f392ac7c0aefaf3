"""Task specs (validated structured configs) and task types: labels, loss, metrics, score.

A task is declared in `conf/task/<name>.yaml` under its own name:

    complexity:
      type: regression
      files: {train: ..., val: ...}
      ...

A task is used in two phases. Reading checks each row's label on its own
(`parse_label(spec, raw)`); then `fit(name, spec, labels)` learns what the training rows
determine (the class list; the mean and sd of regression targets) and returns an immutable
task. Heads are sized from a fitted task, so a model cannot be built before its data is read.
Each task type scores itself so that higher is better; `val/score` is the mean over tasks.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

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
    Metric,
    MetricCollection,
    PearsonCorrCoef,
    R2Score,
    SpearmanCorrCoef,
)
from torchmetrics.utilities import dim_zero_cat

from mtl.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class TaskType(str, Enum):
    regression = "regression"
    classification = "classification"


class Loss(str, Enum):
    mse = "mse"
    huber = "huber"
    l1 = "l1"
    cross_entropy = "cross_entropy"


@dataclass
class SplitSpec:
    """One file split into train/val(/test) by rows, or by groups of rows that stay together."""

    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    group_column: str | None = None  # rows sharing this value land in the same split
    folds: int = 0  # cross-validation: K folds of the groups; the test split is fold `fold`
    fold: int = 0


@dataclass
class HeadSpec:
    hidden: int | None = None  # width of an optional hidden layer (GELU); None = linear head
    dropout: float = 0.1


@dataclass
class TaskSpec:
    type: TaskType = MISSING
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
    loss: Loss | None = None  # regression: mse | huber | l1; classification: cross_entropy
    loss_weight: float = 1.0
    score_weight: float = 1.0  # weight in val/score; 0: an auxiliary task (trained, reported)
    mapped_rmse: bool = False  # regression: also RMSE after a cubic map to the labels (GermEval)


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
        if bool(spec.files) == bool(spec.file):
            raise ConfigError(f"task.{name}: give either `files` (per split) or `file` + `split`")
        if spec.files and "train" not in spec.files:
            raise ConfigError(f"task.{name}.files: needs a 'train' entry, got {list(spec.files)}")
        split = spec.split
        for key, value, ok, allowed in (
            ("train_fraction", spec.train_fraction, 0 < spec.train_fraction <= 1, "in (0, 1]"),
            ("loss_weight", spec.loss_weight, spec.loss_weight >= 0, ">= 0"),
            ("score_weight", spec.score_weight, spec.score_weight >= 0, ">= 0"),
            ("head.dropout", spec.head.dropout, 0 <= spec.head.dropout < 1, "in [0, 1)"),
            ("head.hidden", spec.head.hidden, (spec.head.hidden or 1) > 0, "> 0 or null"),
            ("split.val_fraction", split.val_fraction, 0 < split.val_fraction < 1, "in (0, 1)"),
            ("split.test_fraction", split.test_fraction, 0 <= split.test_fraction < 1,
             "in [0, 1)"),
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
        TASK_TYPES[spec.type].check_spec(name, spec)
        specs[name] = spec
    if not any(spec.score_weight > 0 for spec in specs.values()):
        raise ConfigError("task.*.score_weight: at least one task needs a score_weight > 0")
    return specs


def spec_dict(spec: TaskSpec) -> dict:
    """A spec as plain JSON-able values (the inverse of `parse_task_specs` for one task)."""
    return OmegaConf.to_container(OmegaConf.structured(spec), enum_to_str=True)  # type: ignore[return-value]


FLOAT32_MAX = torch.finfo(torch.float32).max  # targets are trained in float32
Label = float | str  # a parsed label: a regression value, or a class name as in the file


@dataclass(frozen=True, eq=False)
class Task:
    """A fitted task: its spec plus what its training rows determined. Immutable."""

    name: str
    spec: TaskSpec
    type: ClassVar[TaskType]

    @staticmethod
    def check_spec(name: str, spec: TaskSpec) -> None:
        """Refuse settings this task type cannot use, naming the key."""

    @staticmethod
    def parse_label(spec: TaskSpec, raw: str) -> Label:
        """One row's label checked on its own; raises ValueError with the reason."""
        raise NotImplementedError

    @classmethod
    def fit(cls, name: str, spec: TaskSpec, labels: list[Label]) -> Task:
        """The task fitted on the labels of the rows it trains on."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, name: str, spec: TaskSpec, state: dict) -> Task:
        """The inverse of `state()`: a fitted task as a checkpoint recorded it."""
        raise NotImplementedError

    def state(self) -> dict:
        """What a checkpoint needs to rebuild this task's head and label mapping (JSON)."""
        return {"type": self.type.value}

    def encode(self, label: Label) -> float | int:
        """A parsed label as the training target; ValueError if the fitted task cannot use it."""
        raise NotImplementedError

    @property
    def num_outputs(self) -> int:
        raise NotImplementedError

    @property
    def target_dtype(self) -> torch.dtype:
        raise NotImplementedError

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def predict(self, output: Tensor) -> Tensor:
        """Head output -> prediction in label space."""
        raise NotImplementedError

    def metrics(self) -> MetricCollection:
        raise NotImplementedError

    def score(self, values: dict[str, float]) -> float:
        """The task's contribution to val/score (higher is better)."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class RegressionTask(Task):
    """Scalar targets, standardized with the training mean and sd: the head predicts (y - μ) / σ.

    Score: R² = 1 − MSE / Var(y), so 0 is "always predict the mean" and 1 is perfect.
    """

    mean: float = 0.0
    std: float = 1.0
    type: ClassVar[TaskType] = TaskType.regression
    LOSSES: ClassVar[dict] = {
        Loss.mse: F.mse_loss, Loss.huber: F.smooth_l1_loss, Loss.l1: F.l1_loss
    }  # fmt: skip

    @staticmethod
    def check_spec(name: str, spec: TaskSpec) -> None:
        if (spec.loss or Loss.mse) not in RegressionTask.LOSSES:
            raise ConfigError(
                f"task.{name}.loss: {spec.loss.value!r} is not a regression loss "  # type: ignore[union-attr]
                f"(mse, huber or l1)"
            )
        if spec.range is not None and (len(spec.range) != 2 or spec.range[0] >= spec.range[1]):
            raise ConfigError(f"task.{name}.range: must be [low, high], got {spec.range}")

    @staticmethod
    def parse_label(spec: TaskSpec, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"label {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"label {raw!r} is not a finite number")
        if abs(value) > FLOAT32_MAX:
            raise ValueError(f"label {raw!r} is too large for float32 (at most {FLOAT32_MAX:.3g})")
        low, high = spec.range or (-math.inf, math.inf)
        if not low <= value <= high:
            raise ValueError(f"label {value} is outside the range [{low}, {high}]")
        return value

    @classmethod
    def fit(cls, name: str, spec: TaskSpec, labels: list[Label]) -> RegressionTask:
        t = torch.tensor(labels, dtype=torch.float64)
        std = float(t.std()) if len(t) > 1 else 0.0
        return cls(name, spec, mean=float(t.mean()), std=std if std > 0 else 1.0)

    @classmethod
    def from_state(cls, name: str, spec: TaskSpec, state: dict) -> RegressionTask:
        return cls(name, spec, mean=float(state["mean"]), std=float(state["std"]))

    def state(self) -> dict:
        return {**super().state(), "mean": self.mean, "std": self.std}

    def encode(self, label: Label) -> float:
        return float(label)

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.float32

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        standardized = (targets.float() - self.mean) / self.std
        return self.LOSSES[self.spec.loss or Loss.mse](output.squeeze(-1).float(), standardized)

    def predict(self, output: Tensor) -> Tensor:
        y = output.squeeze(-1).float() * self.std + self.mean
        return y.clamp(*self.spec.range) if self.spec.range else y

    def metrics(self) -> MetricCollection:
        metrics = {
            "rmse": MeanSquaredError(squared=False),
            "mae": MeanAbsoluteError(),
            "pearson": PearsonCorrCoef(),
            "spearman": SpearmanCorrCoef(),
            "r2": R2Score(),
        }
        if self.spec.mapped_rmse:
            metrics["rmse_mapped"] = MappedRMSE()
        return MetricCollection(metrics)

    def score(self, values: dict[str, float]) -> float:
        return values["r2"]


@dataclass(frozen=True, eq=False)
class ClassificationTask(Task):
    """Single-label classification with cross-entropy. Score: macro-F1.

    The classes are `spec.labels` in that order, or else the labels of the training rows in
    order of first appearance; a label outside them (in any split) is a bad row.
    """

    labels: tuple[str, ...] = ()
    type: ClassVar[TaskType] = TaskType.classification

    @staticmethod
    def check_spec(name: str, spec: TaskSpec) -> None:
        if (spec.loss or Loss.cross_entropy) != Loss.cross_entropy:
            raise ConfigError(f"task.{name}.loss: classification supports only cross_entropy")
        if spec.labels is not None and len(set(spec.labels)) != len(spec.labels):
            raise ConfigError(f"task.{name}.labels: duplicate values in {spec.labels}")

    @staticmethod
    def parse_label(spec: TaskSpec, raw: str) -> str:
        label = raw.strip()
        if not label:
            raise ValueError("label is empty")
        if spec.labels and label not in spec.labels:
            raise ValueError(f"label {label!r} is not in the label set {spec.labels}")
        return label

    @classmethod
    def fit(cls, name: str, spec: TaskSpec, labels: list[Label]) -> ClassificationTask:
        seen = list(dict.fromkeys(map(str, labels)))
        if len(seen) < 2:
            raise DataError(
                f"task.{name}: the training rows hold {len(seen)} class(es) {seen}; a classifier "
                "needs rows of at least 2"
            )
        classes = tuple(spec.labels) if spec.labels else tuple(seen)
        unseen = [c for c in classes if c not in seen]
        if unseen:
            log.warning("task %s: no training rows of class(es) %s", name, ", ".join(unseen))
        return cls(name, spec, labels=classes)

    @classmethod
    def from_state(cls, name: str, spec: TaskSpec, state: dict) -> ClassificationTask:
        return cls(name, spec, labels=tuple(state["labels"]))

    def state(self) -> dict:
        return {**super().state(), "labels": list(self.labels)}

    def encode(self, label: Label) -> int:
        try:
            return self.labels.index(str(label))
        except ValueError:
            raise ValueError(
                f"label {label!r} is not in the label set {list(self.labels)} learned from the "
                f"training rows (list every class in task.{self.name}.labels)"
            ) from None

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.long

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(output.float(), targets.long())

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


class MappedRMSE(Metric):
    """RMSE after mapping predictions to labels with a least-squares polynomial of `degree`
    (3: the GermEval 2022 text-complexity convention), fitted on the evaluated rows: it
    forgives a monotone miscalibration and measures what a calibration cannot fix."""

    full_state_update = False

    def __init__(self, degree: int = 3) -> None:
        super().__init__()
        self.degree = degree
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.preds.append(preds.detach().double().flatten())
        self.target.append(target.detach().double().flatten())

    def compute(self) -> Tensor:
        return mapped_rmse(dim_zero_cat(self.preds), dim_zero_cat(self.target), self.degree)


def mapped_rmse(preds: Tensor, target: Tensor, degree: int = 3) -> Tensor:
    """sqrt(mean((p(x) - y)²)) with p the degree-`degree` polynomial fitted to (x, y)."""
    x = preds.double()
    scale = x.abs().max().clamp(min=1.0)  # a better-conditioned Vandermonde matrix
    powers = torch.stack([(x / scale) ** k for k in range(degree + 1)], dim=1)  # (N, d+1)
    coef = torch.linalg.lstsq(powers, target.double().unsqueeze(1)).solution
    return ((powers @ coef).squeeze(1) - target.double()).pow(2).mean().sqrt()


TASK_TYPES: dict[TaskType, type[Task]] = {t.type: t for t in (RegressionTask, ClassificationTask)}


def task_type(spec: TaskSpec) -> type[Task]:
    return TASK_TYPES[spec.type]
