"""Random loss weighting: fresh random weights every step."""

from __future__ import annotations

import math
import random

from torch import Tensor

from mtl.balancing.base import LossBalancer


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
