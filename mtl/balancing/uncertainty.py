"""Uncertainty weighting: learned per-task loss weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtl.balancing.base import LossBalancer


class UncertaintyBalancer(LossBalancer):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018):

        L = Σ_i L_i / (2σ_i²) + log σ_i,   learned as s_i = log σ_i²:  Σ_i ½·e^(−s_i)·L_i + ½·s_i

    A task with noisier loss learns a larger σ_i and so a smaller weight 1/(2σ_i²).
    """

    def __init__(self, names: list[str], loss_weights: dict[str, float], seed: int = 0) -> None:
        super().__init__(names, loss_weights, seed)
        self.log_var = nn.Parameter(torch.zeros(len(self.names)))  # (K,) s_i = log σ_i²

    def weights(self) -> dict[str, float]:
        w = 0.5 * torch.exp(-self.log_var.detach())
        return {n: self.loss_weights[n] * float(w[i]) for i, n in enumerate(self.names)}

    def combine(self, losses: dict[str, Tensor], step: int) -> Tensor:
        total = 0.0
        for n, loss in losses.items():
            s = self.log_var[self.names.index(n)]
            total = total + self.loss_weights[n] * (0.5 * torch.exp(-s) * loss + 0.5 * s)
        return total  # type: ignore[return-value]
