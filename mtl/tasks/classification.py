"""Single-label classification: one class per text (or per label column)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor
from torchmetrics import Accuracy, F1Score, MetricCollection

from mtl.errors import ConfigError, DataError
from mtl.tasks.base import Task, label_order, probability_keys, quoted
from mtl.tasks.registry import register_kind
from mtl.tasks.spec import Label, LabelledSpec

log = logging.getLogger(__name__)


@dataclass
class ClassificationSpec(LabelledSpec):
    labels: list[str] | None = None  # the classes as in the file, in their order

    def check(self, name: str) -> None:
        super().check(name)
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ConfigError(f"task.{name}.labels: duplicate values in {self.labels}")


@register_kind("classification", ClassificationSpec)
@dataclass(frozen=True, eq=False)
class ClassificationTask(Task):
    """Single-label classification with cross-entropy. Score: macro-F1.

    The classes are `spec.labels` in that order, or else the labels of the training rows in
    order of first appearance; a label outside them (in any split) is a bad row.
    """

    spec: ClassificationSpec
    labels: tuple[str, ...] = ()
    cross_validates: ClassVar[bool] = True

    @staticmethod
    def parse_label(spec: ClassificationSpec, raw: str) -> str:
        label = raw.strip()
        if not label:
            raise ValueError("label is empty")
        if spec.labels and label not in spec.labels:
            raise ValueError(f"label {label!r} is not in the label set {spec.labels}")
        return label

    @classmethod
    def fit(
        cls,
        name: str,
        spec: ClassificationSpec,
        labels: list[Label],
        tokenizer: Tokenizer | None = None,
    ) -> ClassificationTask:
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
    def from_state(cls, name: str, spec: ClassificationSpec, state: dict) -> ClassificationTask:
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

    def prediction_columns(self, name: str) -> list[str]:
        """Per label column its class, then each class's probability (`<key>_prob_<class>`)."""
        keys = self.target_keys(name)
        return [c for key in keys for c in (key, *probability_keys(key, self.labels))]

    def ensemble_output(self, output: Tensor, reference: Task) -> Tensor:
        """(B, K, C) class probabilities, the classes in `reference`'s order."""
        probs = self.probabilities(output)
        probs = probs if self.multi else probs.unsqueeze(1)
        return probs[..., label_order(self.labels, reference.labels)]  # type: ignore[attr-defined]

    def prediction_rows(self, name: str, mean: Tensor) -> list[dict]:
        rows: list[dict] = [{} for _ in range(len(mean))]
        for j, key in enumerate(self.target_keys(name)):
            probs = mean[:, j]
            for row, best, p in zip(rows, probs.argmax(-1).tolist(), probs.tolist(), strict=True):
                row[key] = self.labels[best]
                row.update(zip(probability_keys(key, self.labels), p, strict=True))
        return rows

    def averages_with(self, other: Task) -> bool:
        return super().averages_with(other) and set(other.labels) == set(self.labels)  # type: ignore[attr-defined]

    def describe_output(self) -> str:
        return f"one of {quoted(self.labels)}"

    def label_text(self, value: float) -> str:
        return self.labels[int(value)]
