"""The task base class: what every task type decides for itself.

A task is used in two phases. Reading checks each row's label on its own
(`parse_label(spec, raw)`); then `fit(name, spec, labels, tokenizer)` learns what the training
rows determine (classes, tags, the mean and sd of regression targets) and returns an immutable
task. Heads are sized from a fitted task, so a model cannot be built before its data is read.
Each task type scores itself so that higher is better; `val/score` is the weighted mean of
the tasks' scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from tokenizers import Tokenizer
from torch import Tensor, nn
from torchmetrics import MetricCollection

from mtl.heads import MLPHead
from mtl.tasks.metrics import ColumnMetric
from mtl.tasks.spec import Label, TaskSpec, TaskType
from mtl.tasks.text_stats import TextFeatures

if TYPE_CHECKING:
    from mtl.data.cache import TokenizedTexts
    from mtl.encoder import Bert


@dataclass(frozen=True, eq=False)
class Task:
    """A fitted task: its spec plus what its training rows determined. Immutable."""

    name: str
    spec: TaskSpec
    text_features: TextFeatures | None = field(default=None, kw_only=True)  # head inputs
    type: ClassVar[TaskType]
    level: ClassVar[str] = "sentence"  # a label per text, or "token": per word or word piece
    has_labels: ClassVar[bool] = True  # False: the texts alone (masked LM)
    default_score_weight: ClassVar[float] = 1.0

    @staticmethod
    def check_spec(name: str, spec: TaskSpec) -> None:
        """Refuse settings this task type cannot use, naming the key."""

    @staticmethod
    def parse_label(spec: TaskSpec, raw: str) -> Label:
        """One row's label checked on its own; raises ValueError with the reason."""
        raise NotImplementedError

    @classmethod
    def fit(cls, name: str, spec: TaskSpec, labels: list[Label], tokenizer: Tokenizer) -> Task:
        """The task fitted on the labels of the rows it trains on."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, name: str, spec: TaskSpec, state: dict) -> Task:
        """The inverse of `state()`: a fitted task as a checkpoint recorded it."""
        raise NotImplementedError

    def state(self) -> dict:
        """What a checkpoint needs to rebuild this task's head and label mapping (JSON)."""
        if self.text_features is None:
            return {"type": self.type.value}
        return {"type": self.type.value, "text_features": self.text_features.state()}

    @classmethod
    def score_weight_of(cls, spec: TaskSpec) -> float:
        """A task's weight in val/score: its spec's, else its type's default."""
        return cls.default_score_weight if spec.score_weight is None else spec.score_weight

    @property
    def score_weight(self) -> float:
        return self.score_weight_of(self.spec)

    @property
    def columns(self) -> list[str]:
        """The label columns: the first is the task's own target (its metrics, its score);
        more (`label_columns`) are further targets, reported as <column>/<metric>."""
        return list(self.spec.label_columns or [self.spec.label_column])

    @property
    def multi(self) -> bool:
        """Targets (N, K) with missing labels allowed, instead of (N,)."""
        return self.spec.label_columns is not None

    def head(self, encoder: Bert) -> nn.Module:
        """The task's head on the shared encoder."""
        head = self.spec.head
        extra = len(self.spec.features)  # text statistics beside the sentence vector
        return MLPHead(encoder.hidden_size + extra, self.num_outputs, head.hidden, head.dropout)

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

    def encode(self, label: Label) -> float | int | list:
        """A parsed label as the training target; ValueError if the fitted task cannot use it."""
        raise NotImplementedError

    def unusable_rows(self, tokens: TokenizedTexts) -> dict[int, str]:
        """Rows this task cannot train on once tokenized, with the reason (bad rows)."""
        return {}

    def targets(self, encoded: list, tokens: TokenizedTexts) -> Tensor:
        """A split's targets from its rows' encoded labels and their tokens."""
        return torch.tensor(encoded, dtype=self.target_dtype)

    def batch_labels(self, dataset, rows: list[int], part: dict, key: str) -> Tensor:
        """The targets of a batch of `dataset`'s rows (`part` holds their padded tokens; `key`
        names the batch, for tasks that draw labels at batch time)."""
        return dataset.targets[rows]

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

    def update_metrics(self, metrics: MetricCollection, output: Tensor, targets: Tensor) -> None:
        """Add a batch's head output and targets to the task's metrics."""
        metrics.update(self.predict(output), targets)

    def score(self, values: dict[str, float]) -> float:
        """The task's contribution to val/score (higher is better)."""
        raise NotImplementedError
