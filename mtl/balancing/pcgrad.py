"""PCGrad: gradient surgery on conflicting task gradients."""

from __future__ import annotations

import random

import torch
from torch import Tensor

from mtl.balancing.base import GradientBalancer


class PCGrad(GradientBalancer):
    """Projecting conflicting gradients (Yu et al. 2020, "Gradient Surgery for Multi-Task
    Learning"): for each task gradient g_i on the shared encoder and each other task j in random
    order, if g_i·g_j < 0 then g_i ← g_i − (g_i·g_j / ‖g_j‖²)·g_j; the update is Σ_i g_i.
    Needs several tasks per step (`data.tasks_per_step` >= 2). Heads get their own gradients.
    """

    def combine_gradients(self, grads: list[Tensor], step: int) -> Tensor:
        return pcgrad(grads, random.Random(f"pcgrad:{self.seed}:{step}"))


def pcgrad(grads: list[Tensor], rng: random.Random) -> Tensor:
    """K flat (P,) task gradients -> the (P,) sum of their projections, others drawn by rng."""
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
