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
    label_columns: list[str] | None = None  # several targets, one output each; empty = missing
    labels: list[str] | None = None  # classification: label values as in the file, in class order
    range: list[float] | None = None  # regression: [low, high]; labels outside are bad rows
    train_fraction: float = 1.0  # use this fraction of the training rows (learning curves)
    head: HeadSpec = field(default_factory=HeadSpec)
    loss: Loss | None = None  # regression: mse | huber | l1; classification: cross_entropy
    loss_weight: float = 1.0
    score_weight: float = 1.0  # weight in val/score; 0: an auxiliary task (trained, reported)
    lr_scale: float = 1.0  # multiplies optimizer.head_lr for this task's head
    encoder_lr_scale: float = 1.0  # multiplies the encoder's rate at steps that train this task
    batch_size: int | None = None  # rows per batch of this task (None: data.batch_size)
    max_length: int | None = None  # tokens per text of this task (None: encoder.max_length)
    patience: int | None = None  # validations without a better score before the task stops
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
            ("lr_scale", spec.lr_scale, spec.lr_scale > 0, "> 0"),
            ("encoder_lr_scale", spec.encoder_lr_scale, spec.encoder_lr_scale >= 0, ">= 0"),
            ("batch_size", spec.batch_size, (spec.batch_size or 1) > 0, "> 0 or null"),
            ("max_length", spec.max_length, (spec.max_length or 3) > 2, "> 2 or null"),
            ("patience", spec.patience, (spec.patience or 1) > 0, "> 0 or null"),
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

    @property
    def columns(self) -> list[str]:
        """The label columns: the first is the task's own target (its metrics, its score);
        more (`label_columns`) are further targets, reported as <column>/<metric>."""
        return list(self.spec.label_columns or [self.spec.label_column])

    @property
    def multi(self) -> bool:
        """Targets (N, K) with missing labels allowed, instead of (N,)."""
        return self.spec.label_columns is not None

    def column_metrics(self, make) -> MetricCollection:
        """`make()` per column: the first column's under their own names, the others' as
        <column>/<name>; with several columns, each sees only its observed rows."""
        if not self.multi:
            return MetricCollection(make())
        metrics = {}
        for j, column in enumerate(self.columns):
            prefix = "" if j == 0 else f"{column}/"
            metrics |= {prefix + k: ColumnMetric(m, j, self.missing) for k, m in make().items()}
        return MetricCollection(metrics, compute_groups=False)  # wrappers hold no states

    def missing(self, targets: Tensor) -> Tensor:
        """Which targets are missing labels (multi-target tasks)."""
        raise NotImplementedError

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
    """Scalar targets, standardized with the training mean and sd: the head predicts (y - μ) / σ
    (per column with several label columns; missing labels are left out of loss and metrics).

    Score: R² = 1 − MSE / Var(y), so 0 is "always predict the mean" and 1 is perfect.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
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
        rows = [row if isinstance(row, tuple) else (row,) for row in labels]
        means, stds = [], []
        for j in range(len(rows[0])):
            t = torch.tensor([r[j] for r in rows if r[j] is not None], dtype=torch.float64)
            std = float(t.std()) if len(t) > 1 else 0.0
            means.append(float(t.mean()) if len(t) else 0.0)
            stds.append(std if std > 0 else 1.0)
        return cls(name, spec, mean=tuple(means), std=tuple(stds))

    @classmethod
    def from_state(cls, name: str, spec: TaskSpec, state: dict) -> RegressionTask:
        as_tuple = lambda v: tuple(map(float, v)) if isinstance(v, list) else (float(v),)  # noqa: E731
        return cls(name, spec, mean=as_tuple(state["mean"]), std=as_tuple(state["std"]))

    def state(self) -> dict:
        if self.multi:
            return {**super().state(), "mean": list(self.mean), "std": list(self.std)}
        return {**super().state(), "mean": self.mean[0], "std": self.std[0]}

    def encode(self, label: Label) -> float | list[float]:
        if self.multi:
            return [math.nan if v is None else float(v) for v in label]  # type: ignore[union-attr]
        return float(label)  # type: ignore[arg-type]

    def missing(self, targets: Tensor) -> Tensor:
        return torch.isnan(targets)

    @property
    def num_outputs(self) -> int:
        return len(self.columns)

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.float32

    def _scale(self, output: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(self.mean, device=output.device)
        std = torch.tensor(self.std, device=output.device)
        return mean, std

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        mean, std = self._scale(output)
        loss = self.LOSSES[self.spec.loss or Loss.mse]
        if not self.multi:
            return loss(output.squeeze(-1).float(), (targets.float() - mean[0]) / std[0])
        seen = ~self.missing(targets)  # (B, K)
        standardized = (targets.float() - mean) / std
        return loss(output.float()[seen], standardized[seen])  # mean over observed labels

    def predict(self, output: Tensor) -> Tensor:
        """(B,) values in the label scale, or (B, K) with several label columns."""
        mean, std = self._scale(output)
        y = output.float() * std + mean
        y = y.clamp(*self.spec.range) if self.spec.range else y
        return y if self.multi else y.squeeze(-1)

    def metrics(self) -> MetricCollection:
        def make() -> dict:
            metrics = {
                "rmse": MeanSquaredError(squared=False),
                "mae": MeanAbsoluteError(),
                "pearson": PearsonCorrCoef(),
                "spearman": SpearmanCorrCoef(),
                "r2": R2Score(),
            }
            if self.spec.mapped_rmse:
                metrics["rmse_mapped"] = MappedRMSE()
            return metrics

        return self.column_metrics(make)

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
        cells = [v for row in labels for v in (row if isinstance(row, tuple) else (row,))]
        seen = list(dict.fromkeys(str(v) for v in cells if v is not None))
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

    MISSING: ClassVar[int] = -1  # the target of a missing label

    def encode(self, label: Label) -> int | list[int]:
        if self.multi:
            return [self.MISSING if v is None else self._index(v) for v in label]  # type: ignore[union-attr]
        return self._index(label)

    def _index(self, label: Label) -> int:
        try:
            return self.labels.index(str(label))
        except ValueError:
            raise ValueError(
                f"label {label!r} is not in the label set {list(self.labels)} learned from the "
                f"training rows (list every class in task.{self.name}.labels)"
            ) from None

    def missing(self, targets: Tensor) -> Tensor:
        return targets == self.MISSING

    @property
    def num_outputs(self) -> int:
        return len(self.labels) * len(self.columns)

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.long

    def logits(self, output: Tensor) -> Tensor:
        """(B, C), or (B, K, C) with several label columns."""
        return output.view(len(output), len(self.columns), -1) if self.multi else output

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        logits = self.logits(output.float())
        if not self.multi:
            return F.cross_entropy(logits, targets.long())
        return F.cross_entropy(logits.flatten(0, 1), targets.long().flatten(),
                               ignore_index=self.MISSING)  # fmt: skip

    def predict(self, output: Tensor) -> Tensor:
        """(B,) class indices, or (B, K) with several label columns."""
        return self.logits(output).argmax(-1)

    def probabilities(self, output: Tensor) -> Tensor:
        """(B, C), or (B, K, C): each class's probability."""
        return self.logits(output.float()).softmax(-1)

    def metrics(self) -> MetricCollection:
        k = len(self.labels)
        return self.column_metrics(lambda: {
            "accuracy": Accuracy(task="multiclass", num_classes=k),
            "f1": F1Score(task="multiclass", num_classes=k, average="macro"),
        })  # fmt: skip

    def score(self, values: dict[str, float]) -> float:
        return values["f1"]


class ColumnMetric(Metric):
    """A metric of one column of (N, K) predictions and targets, over its observed labels."""

    full_state_update = False

    def __init__(self, metric: Metric, column: int, missing) -> None:
        super().__init__()
        self.metric, self.column, self.missing = metric, column, missing

    def update(self, preds: Tensor, target: Tensor) -> None:
        p, t = preds[:, self.column], target[:, self.column]
        seen = ~self.missing(t)
        if seen.any():
            self.metric.update(p[seen], t[seen])

    def compute(self) -> Tensor:
        return self.metric.compute()

    def reset(self) -> None:
        super().reset()
        self.metric.reset()


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
