"""Dynamic weight average: weights from how fast each task's loss falls."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mtl.balancing.base import LossBalancer
from mtl.errors import ConfigError


class DynamicWeightAverage(LossBalancer):
    """DWA (Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with Attention"):

        w_i(t) = K · exp(r_i(t−1) / T) / Σ_j exp(r_j(t−1) / T),   r_i(t−1) = L̄_i(t−1) / L̄_i(t−2)

    where t counts periods of `period` steps and L̄_i is task i's mean loss over a period.
    Weights are 1 for the first two periods. A task whose loss falls slowest gets more weight.
    """

    def __init__(
        self,
        names: list[str],
        loss_weights: dict[str, float],
        seed: int = 0,
        temperature: float = 2.0,
        period: int = 50,
    ) -> None:
        super().__init__(names, loss_weights, seed)
        if temperature <= 0 or period <= 0:
            raise ConfigError("balancer: temperature and period must be > 0")
        self.temperature, self.period = temperature, period
        K = len(self.names)
        self.register_buffer("sums", torch.zeros(K, dtype=torch.float64))  # this period
        self.register_buffer("counts", torch.zeros(K, dtype=torch.float64))
        self.register_buffer("means", torch.full((2, K), math.nan, dtype=torch.float64))
        self.register_buffer("w", torch.ones(K, dtype=torch.float64))

    def weights(self) -> dict[str, float]:
        return {n: self.loss_weights[n] * float(self.w[i]) for i, n in enumerate(self.names)}

    def combine(self, losses: dict[str, Tensor], step: int) -> Tensor:
        total = 0.0  # with the weights on the device: no host-device sync per step
        for n, loss in losses.items():
            w = self.loss_weights[n] * self.w[self.names.index(n)]
            total = total + w.to(loss.dtype) * loss
        return total  # type: ignore[return-value]

    def end_step(self, losses: dict[str, Tensor], step: int) -> None:
        for n, value in losses.items():
            i = self.names.index(n)
            self.sums[i] += value
            self.counts[i] += 1
        if (step + 1) % self.period:
            return
        current = torch.where(self.counts > 0, self.sums / self.counts.clamp(min=1), self.means[1])
        self.means = torch.stack([self.means[1], current])
        self.sums.zero_()
        self.counts.zero_()
        ratio = self.means[1] / self.means[0]
        if torch.isfinite(ratio).all():
            e = torch.exp(ratio / self.temperature)
            self.w = len(self.names) * e / e.sum()
