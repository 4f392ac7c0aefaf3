"""Metrics the task types share beyond torchmetrics': per label column, mapped RMSE, spans."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


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


def spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """The (type, start, end) entities of a BIO tag sequence, as seqeval reads it: an entity
    starts at B-X, or at an I-X that does not continue an X; it ends before the next tag that
    is not I-X."""
    found, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, name = tag.partition("-")
        if kind is not None and not (prefix == "I" and name == kind):
            found.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and kind is None:
            start, kind = i, name
    return found


class SpanF1(Metric):
    """Micro-averaged entity F1 over BIO spans: an entity counts as found only with its exact
    type and extent (seqeval's default). Predictions and targets are (B, T) tag ids; positions
    whose target is `ignore` (word pieces after a word's first, special tokens, padding) are
    left out before the spans are read."""

    full_state_update = False

    def __init__(self, labels: tuple[str, ...], ignore: int) -> None:
        super().__init__()
        self.labels, self.ignore = labels, ignore
        for name in ("correct", "predicted", "gold"):
            self.add_state(name, default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        for p, t in zip(preds.tolist(), target.tolist(), strict=True):
            kept = [(a, b) for a, b in zip(p, t, strict=True) if b != self.ignore]
            predicted = spans([self.labels[a] for a, _ in kept])
            gold = spans([self.labels[b] for _, b in kept])
            self.correct += len(predicted & gold)
            self.predicted += len(predicted)
            self.gold += len(gold)

    def compute(self) -> Tensor:
        return 2 * self.correct / (self.predicted + self.gold).clamp(min=1)
