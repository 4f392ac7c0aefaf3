"""Regression: one number per text (or per label column), standardized for training."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor
from torchmetrics import (
    MeanAbsoluteError,
    MeanSquaredError,
    MetricCollection,
    PearsonCorrCoef,
    R2Score,
    SpearmanCorrCoef,
)

from mtl.errors import require
from mtl.tasks.base import Task
from mtl.tasks.metrics import MappedRMSE
from mtl.tasks.registry import register_kind
from mtl.tasks.spec import FLOAT32_MAX, Label, LabelledSpec


class RegressionLoss(str, Enum):
    mse = "mse"
    huber = "huber"
    l1 = "l1"


@dataclass
class RegressionSpec(LabelledSpec):
    range: list[float] | None = None  # [low, high]; labels outside are bad rows
    loss: RegressionLoss = RegressionLoss.mse
    mapped_rmse: bool = False  # also RMSE after a cubic map to the labels (GermEval)

    def check(self, name: str) -> None:
        super().check(name)
        bounds = self.range
        ok = bounds is None or (len(bounds) == 2 and bounds[0] < bounds[1])
        require(f"task.{name}.range", bounds, ok, "[low, high]")


@register_kind("regression", RegressionSpec)
@dataclass(frozen=True, eq=False)
class RegressionTask(Task):
    """Scalar targets, standardized with the training mean and sd: the head predicts (y - μ) / σ
    (per column with several label columns; missing labels are left out of loss and metrics).

    Score: R² = 1 − MSE / Var(y), so 0 is "always predict the mean" and 1 is perfect.
    """

    spec: RegressionSpec
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    cross_validates: ClassVar[bool] = True
    LOSSES: ClassVar[dict] = {
        RegressionLoss.mse: F.mse_loss,
        RegressionLoss.huber: F.smooth_l1_loss,
        RegressionLoss.l1: F.l1_loss,
    }

    @staticmethod
    def parse_label(spec: RegressionSpec, raw: str) -> float:
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
    def fit(
        cls,
        name: str,
        spec: RegressionSpec,
        labels: list[Label],
        tokenizer: Tokenizer | None = None,
    ) -> RegressionTask:
        rows = [row if isinstance(row, tuple) else (row,) for row in labels]
        means, stds = [], []
        for j in range(len(rows[0])):
            t = torch.tensor([r[j] for r in rows if r[j] is not None], dtype=torch.float64)
            std = float(t.std()) if len(t) > 1 else 0.0
            means.append(float(t.mean()) if len(t) else 0.0)
            stds.append(std if std > 0 else 1.0)
        return cls(name, spec, mean=tuple(means), std=tuple(stds))

    @classmethod
    def from_state(cls, name: str, spec: RegressionSpec, state: dict) -> RegressionTask:
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
        loss = self.LOSSES[self.spec.loss]
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

    def describe_output(self) -> str:
        bounds = self.spec.range
        scale = f" in [{bounds[0]}, {bounds[1]}]" if bounds else ""
        columns = zip(self.columns, self.mean, self.std, strict=True)
        stats = ", ".join(f"{c}: mean {m:.3f}, sd {d:.3f}" for c, m, d in columns)
        return f"a number{scale} per label column (training {stats})"
