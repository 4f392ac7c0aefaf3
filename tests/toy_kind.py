"""A task kind defined outside mtl, in this one file: ordinal labels (low < mid < high).

The head predicts one number, a label's position among the ordered `levels` (this kind's own
spec key); a prediction is the nearest level. tests/test_task_plugin.py installs it as a
plug-in (an `mtl.task_kinds` entry point naming this module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanMetric, MetricCollection

from mtl.errors import require
from mtl.tasks import Label, LabelledSpec, Task, register_kind


@dataclass
class OrdinalSpec(LabelledSpec):
    levels: list[str] = field(default_factory=list)  # the labels in order, lowest first

    def check(self, name: str) -> None:
        super().check(name)
        ok = len(self.levels) >= 2 and len(set(self.levels)) == len(self.levels)
        require(f"task.{name}.levels", self.levels, ok, "2 or more distinct labels")


@register_kind("ordinal", OrdinalSpec)
@dataclass(frozen=True, eq=False)
class OrdinalTask(Task):
    """MSE on the level's position. Metrics: exact accuracy and MAE in levels. Score: accuracy."""

    spec: OrdinalSpec
    cross_validates: ClassVar[bool] = True

    @staticmethod
    def parse_label(spec: OrdinalSpec, raw: str) -> str:
        if raw.strip() not in spec.levels:
            raise ValueError(f"label {raw!r} is not one of the levels {spec.levels}")
        return raw.strip()

    @classmethod
    def fit(
        cls, name: str, spec: OrdinalSpec, labels: list[Label], tokenizer: Tokenizer | None = None
    ) -> OrdinalTask:
        return cls(name, spec)

    @classmethod
    def from_state(cls, name: str, spec: OrdinalSpec, state: dict) -> OrdinalTask:
        return cls(name, spec)

    def encode(self, label: Label) -> float:
        return float(self.spec.levels.index(label))  # type: ignore[arg-type]

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.float32

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        return F.mse_loss(output.squeeze(-1).float(), targets)

    def predict(self, output: Tensor) -> Tensor:
        """(B,) the nearest level's position."""
        return output.squeeze(-1).float().round().clamp(0, len(self.spec.levels) - 1)

    def metrics(self) -> MetricCollection:
        return MetricCollection({"accuracy": MeanMetric(), "mae": MeanAbsoluteError()})

    def update_metrics(self, metrics: MetricCollection, output: Tensor, targets: Tensor) -> None:
        predicted = self.predict(output)
        metrics["accuracy"].update((predicted == targets).float())
        metrics["mae"].update(predicted, targets)

    def score(self, values: dict[str, float]) -> float:
        return values["accuracy"]

    def prediction_columns(self, name: str) -> list[str]:
        """The nearest level, and the position the head predicted (`<task>_position`)."""
        return [name, f"{name}_position"]

    def ensemble_output(self, output: Tensor, reference: Task) -> Tensor:
        return output.float()  # (B, 1) positions, averaged before the nearest level is taken

    def prediction_rows(self, name: str, mean: Tensor) -> list[dict]:
        nearest = mean[:, 0].round().clamp(0, len(self.spec.levels) - 1).long()
        return [
            {name: self.spec.levels[level], f"{name}_position": position}
            for level, position in zip(nearest.tolist(), mean[:, 0].tolist(), strict=True)
        ]

    def averages_with(self, other: Task) -> bool:
        return super().averages_with(other) and other.spec.levels == self.spec.levels

    def describe_output(self) -> str:
        return f"one of the ordered levels {' < '.join(self.spec.levels)}"

    def label_text(self, value: float) -> str:
        return self.spec.levels[int(value)]
