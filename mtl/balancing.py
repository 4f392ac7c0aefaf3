"""Loss balancing: how the per-task losses of a step become the one loss that is optimized.

A balancer is a module of the LightningModule (so learned weights train with it and every
state is in the checkpoint). `combine` takes the losses of the tasks in this step, keyed by
task name; `weights()` reports the current weight per task, logged as `balancer/w/<task>`.
Gradient-level methods (PCGrad) instead combine per-task gradients: see `combine_gradients`.
"""

from __future__ import annotations

import math
import random

import torch
from torch import Tensor, nn

from mtl.errors import ConfigError


class LossBalancer(nn.Module):
    """Base class: per-task weights w_i (times the task's `loss_weight`) and L = Σ_i w_i L_i."""

    gradient_level = False  # True: combines per-task gradients instead (combine_gradients)

    def __init__(self, names: list[str], loss_weights: dict[str, float], seed: int = 0) -> None:
        super().__init__()
        self.names = list(names)
        self.loss_weights = {n: float(loss_weights.get(n, 1.0)) for n in self.names}
        self.seed = seed

    def weights(self) -> dict[str, float]:
        """The current weight of each task, as logged to balancer/w/<task>."""
        return dict(self.loss_weights)

    def combine(self, losses: dict[str, Tensor], step: int) -> Tensor:
        w = self.weights()
        return sum(w[n] * loss for n, loss in losses.items())  # type: ignore[return-value]

    def end_step(self, losses: dict[str, Tensor], step: int) -> None:
        """Record the step's (detached, all-reduced) losses, device scalars; stateful balancers
        update here, reading them as numbers only at their own interval."""

    def combine_gradients(self, grads: list[Tensor], step: int) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} balances losses, not gradients")


class StaticBalancer(LossBalancer):
    """Static weights: L = Σ_i w_i L_i, with w_i the task's `loss_weight`."""


class UncertaintyBalancer(LossBalancer):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018):

        L = Σ_i L_i / (2σ_i²) + log σ_i,   learned as s_i = log σ_i²:  Σ_i ½·e^(−s_i)·L_i + ½·s_i

    A task with noisier loss learns a larger σ_i and so a smaller weight 1/(2σ_i²).
    """

    def __init__(self, names: list[str], loss_weights: dict[str, float], seed: int = 0) -> None:
        super().__init__(names, loss_weights, seed)
        self.log_var = nn.Parameter(torch.zeros(len(self.names)))  # s_i = log σ_i²

    def weights(self) -> dict[str, float]:
        w = 0.5 * torch.exp(-self.log_var.detach())
        return {n: self.loss_weights[n] * float(w[i]) for i, n in enumerate(self.names)}

    def combine(self, losses: dict[str, Tensor], step: int) -> Tensor:
        total = 0.0
        for n, loss in losses.items():
            s = self.log_var[self.names.index(n)]
            total = total + self.loss_weights[n] * (0.5 * torch.exp(-s) * loss + 0.5 * s)
        return total  # type: ignore[return-value]


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


class RandomLossWeighting(LossBalancer):
    """RLW (Lin et al. 2022, "Reasonable Effectiveness of Random Weighting"): each step,
    w = K · softmax(z) with z ~ N(0, I), drawn from (seed, step) so runs are reproducible."""

    def __init__(self, names: list[str], loss_weights: dict[str, float], seed: int = 0) -> None:
        super().__init__(names, loss_weights, seed)
        self._last = dict.fromkeys(self.names, 1.0)

    def step_weights(self, step: int) -> dict[str, float]:
        rng = random.Random(f"rlw:{self.seed}:{step}")
        z = [math.exp(rng.gauss(0.0, 1.0)) for _ in self.names]
        total = sum(z)
        return {n: self.loss_weights[n] * len(z) * z[i] / total for i, n in enumerate(self.names)}

    def weights(self) -> dict[str, float]:
        return dict(self._last)

    def combine(self, losses: dict[str, Tensor], step: int) -> Tensor:
        self._last = self.step_weights(step)
        return super().combine(losses, step)


class PCGrad(LossBalancer):
    """Projecting conflicting gradients (Yu et al. 2020, "Gradient Surgery for Multi-Task
    Learning"): for each task gradient g_i on the shared encoder and each other task j in random
    order, if g_i·g_j < 0 then g_i ← g_i − (g_i·g_j / ‖g_j‖²)·g_j; the update is Σ_i g_i.
    Needs several tasks per step (`data.tasks_per_step` >= 2). Heads get their own gradients.
    """

    gradient_level = True

    def combine_gradients(self, grads: list[Tensor], step: int) -> Tensor:
        """grads: one flat (P,) gradient per task, weighted by loss_weight -> the (P,) update."""
        return pcgrad(grads, random.Random(f"pcgrad:{self.seed}:{step}"))


def pcgrad(grads: list[Tensor], rng: random.Random) -> Tensor:
    projected = []
    for i, g in enumerate(grads):
        g = g.clone()
        others = [j for j in range(len(grads)) if j != i]
        rng.shuffle(others)
        for j in others:
            dot = torch.dot(g, grads[j])
            if dot < 0:
                g -= dot / grads[j].pow(2).sum().clamp(min=1e-20) * grads[j]
        projected.append(g)
    return torch.stack(projected).sum(0)
