"""The task base class: what every task kind decides for itself.

A kind is a subclass registered by name with its spec (`registry.register_kind`); its file
holds everything about it: the spec's keys and their checks, how labels are read, the head,
loss, metrics and score, the columns `mtl.predict` writes, the model card's line, and whether
cross-validation can pool its predictions.

A task is used in two phases. Reading checks each row's label on its own
(`parse_label(spec, raw)`); then `fit(name, spec, labels, tokenizer)` learns what the training
rows determine (classes, tags, the mean and sd of regression targets) and returns an immutable
task. Heads are sized from a fitted task, so a model cannot be built before its data is read.
Each kind scores itself so that higher is better; `val/score` is the weighted mean of the
tasks' scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from tokenizers import Tokenizer
from torch import Tensor, nn
from torchmetrics import MetricCollection

from mtl.errors import ConfigError
from mtl.heads import MLPHead
from mtl.tasks.metrics import ColumnMetric
from mtl.tasks.spec import Label, LabelledSpec, TaskSpec
from mtl.tasks.text_stats import TextFeatures

if TYPE_CHECKING:
    from mtl.data.cache import TokenizedTexts
    from mtl.encoder import Encoder


@dataclass(frozen=True, eq=False)
class Task:
    """A fitted task: its spec plus what its training rows determined. Immutable.

    The defaults suit a kind with a value per text and per label column (`predict` gives it in
    the label scale); kinds with other outputs override what differs."""

    name: str
    spec: TaskSpec
    text_features: TextFeatures | None = field(default=None, kw_only=True)  # head inputs
    kind: ClassVar[str]  # the registered name (`type:` in a spec)
    spec_type: ClassVar[type[TaskSpec]]  # the kind's spec
    level: ClassVar[str] = "sentence"  # a label per text, or "token": per word or word piece
    tokenize_words: ClassVar[bool] = False  # texts are words joined by spaces, a label per word
    cross_validates: ClassVar[bool] = False  # one prediction per row that folds can pool
    default_score_weight: ClassVar[float] = 1.0

    @classmethod
    def check_spec(cls, name: str, spec: TaskSpec) -> None:
        """Refuse settings this kind cannot use, naming the key."""
        spec.check(name)
        if spec.features and cls.level != "sentence":
            raise ConfigError(
                f"task.{name}.features: text statistics feed heads with a label per text, not a "
                f"{cls.kind} task"
            )

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
            return {"type": self.kind}
        return {"type": self.kind, "text_features": self.text_features.state()}

    @classmethod
    def score_weight_of(cls, spec: TaskSpec) -> float:
        """A task's weight in val/score: its spec's, else its kind's default."""
        return cls.default_score_weight if spec.score_weight is None else spec.score_weight

    @property
    def score_weight(self) -> float:
        return self.score_weight_of(self.spec)

    @property
    def columns(self) -> list[str]:
        """The label columns: the first is the task's own target (its metrics, its score);
        more (`label_columns`) are further targets, reported as <column>/<metric>."""
        return self.spec.label_sources

    @property
    def multi(self) -> bool:
        """Targets (N, K) with missing labels allowed, instead of (N,)."""
        return isinstance(self.spec, LabelledSpec) and self.spec.label_columns is not None

    def head(self, encoder: Encoder) -> nn.Module:
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

    # ---- what mtl.predict, mtl.export and cross-validation show of the task ----------------

    def target_keys(self, name: str) -> list[str]:
        """A prediction's key per label column: `<task>`, then `<task>_<column>` for more."""
        return [name if j == 0 else f"{name}_{column}" for j, column in enumerate(self.columns)]

    def prediction_columns(self, name: str) -> list[str]:
        """The columns `mtl.predict` writes for this task (named `name`), in order."""
        return self.target_keys(name)

    def ensemble_output(self, output: Tensor, reference: Task) -> Tensor:
        """What an ensemble averages over its models, from a batch's head output: (B, K)
        values in the label scale, in `reference`'s (the first model's task's) order."""
        values = self.predict(output).float()
        return values if self.multi else values.unsqueeze(-1)

    def prediction_rows(self, name: str, mean: Tensor) -> list[dict]:
        """Each row's `prediction_columns` from the models' mean `ensemble_output`."""
        return [dict(zip(self.target_keys(name), row, strict=True)) for row in mean.tolist()]

    def averages_with(self, other: Task) -> bool:
        """Whether `other`, this task in another model of an ensemble, has the same outputs."""
        return type(other) is type(self) and other.columns == self.columns

    def describe_output(self) -> str:
        """What the task predicts, for the model card's task table."""
        return f"a value per label column ({', '.join(self.columns)})"

    def label_text(self, value: float) -> str:
        """A prediction or encoded label as cross-validation's out-of-fold file writes it."""
        return f"{value:.6g}"


def label_order(labels: tuple[str, ...], reference: tuple[str, ...]) -> list[int]:
    """The indices that put outputs in `labels`' order into `reference`'s order."""
    return [labels.index(label) for label in reference]


def probability_keys(key: str, labels: tuple[str, ...]) -> list[str]:
    """The columns of each label's probability: `<key>_prob_<label>`."""
    return [f"{key}_prob_{label}" for label in labels]


def quoted(labels: tuple[str, ...]) -> str:
    """Labels as the model card lists them: `a`, `b`."""
    return ", ".join(f"`{label}`" for label in labels)
