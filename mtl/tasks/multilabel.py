"""Multi-label classification: any number of labels per text, out of a set."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MultilabelF1Score

from mtl.errors import DataError, require
from mtl.tasks.base import Task, label_order, probability_keys, quoted
from mtl.tasks.registry import register_kind
from mtl.tasks.spec import Label, LabelledSpec


@dataclass
class MultilabelSpec(LabelledSpec):
    labels: list[str] | None = None  # the label set as in the file, in its order
    label_delimiter: str = ";"  # labels in one cell, e.g. "price;service"
    threshold: float = 0.5  # a label is predicted above this probability

    def check(self, name: str) -> None:
        super().check(name)
        threshold = self.threshold
        require(f"task.{name}.threshold", threshold, 0 < threshold < 1, "in (0, 1)")


@register_kind("multilabel", MultilabelSpec)
@dataclass(frozen=True, eq=False)
class MultilabelTask(Task):
    """Sigmoid and binary cross-entropy per label; a label is predicted above `threshold`.
    The labels come in one cell (`label_delimiter`-separated, e.g. "price;service"; an empty
    cell: none of them) or as one 0/1 column per label (`label_columns`; an empty cell is a
    missing label). Metrics: micro- and macro-F1 over the labels. Score: macro-F1."""

    spec: MultilabelSpec
    labels: tuple[str, ...] = ()
    IGNORE: ClassVar[int] = -1  # a missing label, for the metrics

    @staticmethod
    def parse_label(spec: MultilabelSpec, raw: str) -> Label:
        if spec.label_columns:  # one 0/1 cell of a label's column
            if raw.strip() not in ("0", "1"):
                raise ValueError(f"label {raw!r} is not 0 or 1")
            return int(raw)
        labels = tuple(x.strip() for x in raw.split(spec.label_delimiter) if x.strip())
        unknown = [x for x in labels if spec.labels and x not in spec.labels]
        if unknown:
            raise ValueError(f"label {unknown[0]!r} is not in the label set {spec.labels}")
        return labels

    @classmethod
    def fit(
        cls,
        name: str,
        spec: MultilabelSpec,
        labels: list[Label],
        tokenizer: Tokenizer | None = None,
    ) -> MultilabelTask:
        if spec.label_columns:
            found = tuple(spec.label_columns)
        else:
            found = tuple(spec.labels or dict.fromkeys(x for row in labels for x in row))
        if not found:
            raise DataError(f"task.{name}: the training rows hold no labels at all")
        return cls(name, spec, labels=found)

    @classmethod
    def from_state(cls, name: str, spec: MultilabelSpec, state: dict) -> MultilabelTask:
        return cls(name, spec, labels=tuple(state["labels"]))

    def state(self) -> dict:
        return {**super().state(), "labels": list(self.labels)}

    @property
    def multi(self) -> bool:
        return False  # the label columns are the labels of one task, scored together

    @property
    def columns(self) -> list[str]:
        return [self.spec.label_column]

    def encode(self, label: Label) -> list[float]:
        if self.spec.label_columns:
            return [math.nan if v is None else float(v) for v in label]  # type: ignore[union-attr]
        unknown = [x for x in label if x not in self.labels]  # type: ignore[union-attr]
        if unknown:
            raise ValueError(
                f"label {unknown[0]!r} is not in the label set {list(self.labels)} learned "
                f"from the training rows (list every label in task.{self.name}.labels)"
            )
        return [float(x in label) for x in self.labels]  # type: ignore[operator]

    def missing(self, targets: Tensor) -> Tensor:
        return torch.isnan(targets)

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.float32

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        seen = ~self.missing(targets)
        return F.binary_cross_entropy_with_logits(output.float()[seen], targets[seen])

    def probabilities(self, output: Tensor) -> Tensor:
        return output.float().sigmoid()

    def predict(self, output: Tensor) -> Tensor:
        """(B, L) 0/1: each label above the threshold."""
        return (self.probabilities(output) > self.spec.threshold).long()

    def metrics(self) -> MetricCollection:
        n = len(self.labels)
        return MetricCollection({
            "f1_micro": MultilabelF1Score(num_labels=n, average="micro", ignore_index=self.IGNORE),
            "f1_macro": MultilabelF1Score(num_labels=n, average="macro", ignore_index=self.IGNORE),
        })  # fmt: skip

    def update_metrics(self, metrics: MetricCollection, output: Tensor, targets: Tensor) -> None:
        target = torch.where(self.missing(targets), self.IGNORE, targets).long()
        metrics.update(self.predict(output), target)

    def score(self, values: dict[str, float]) -> float:
        return values["f1_macro"]

    def prediction_columns(self, name: str) -> list[str]:
        """The labels above the threshold (joined by the delimiter), then each label's
        probability (`<task>_prob_<label>`)."""
        return [name, *probability_keys(name, self.labels)]

    def ensemble_output(self, output: Tensor, reference: Task) -> Tensor:
        """(B, L) label probabilities, the labels in `reference`'s order."""
        order = label_order(self.labels, reference.labels)  # type: ignore[attr-defined]
        return self.probabilities(output)[:, order]

    def prediction_rows(self, name: str, mean: Tensor) -> list[dict]:
        rows = []
        for p in mean.tolist():
            above = [c for c, q in zip(self.labels, p, strict=True) if q > self.spec.threshold]
            row = {name: self.spec.label_delimiter.join(above)}
            rows.append(row | dict(zip(probability_keys(name, self.labels), p, strict=True)))
        return rows

    def averages_with(self, other: Task) -> bool:
        return super().averages_with(other) and set(other.labels) == set(self.labels)  # type: ignore[attr-defined]

    def describe_output(self) -> str:
        return f"any of {quoted(self.labels)}"
