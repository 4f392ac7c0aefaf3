"""The balancer interface: how a step's per-task losses become the gradients it optimizes.

A balancer is a module of the LightningModule (so learned weights train with it and every
state is in the checkpoint). Each batch, `backward` turns the losses of its tasks (keyed by
task name) into gradients in `.grad`, through what the training loop lends it (`Backprop`);
before each optimizer step, `before_optimizer_step` may still change them. `weights()` reports
the current weight per task, logged as `balancer/w/<task>`.

A loss-level balancer only says how losses combine (`combine`). A gradient-level one
(`GradientBalancer`) only says how per-task gradients combine (`combine_gradients`); taking
those gradients, accumulating them over a window, averaging them over DDP ranks and writing
the update back is done here, once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Backprop:
    """What the training loop lends a balancer to turn one batch's losses into gradients."""

    backward: Callable[[Tensor], None]  # a scalar through the whole model; DDP averages .grad
    shared: list[nn.Parameter]  # trainable in every task's path (the encoder); [] while frozen
    own: dict[str, list[nn.Parameter]]  # each batch task's trainable parameters (its head)
    rank_mean: Callable[[Tensor], Tensor]  # the mean over DDP ranks (identity on one process)
    distributed: bool  # more than one rank


class LossBalancer(nn.Module):
    """Base class: per-task weights w_i (times the task's `loss_weight`) and L = Σ_i w_i L_i."""

    gradient_level = False  # True: combines per-task gradients (GradientBalancer)

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

    def backward(self, losses: dict[str, Tensor], step: int, backprop: Backprop) -> Tensor:
        """Add the gradients of batch `step`'s losses to `.grad`; returns the (detached)
        balanced loss."""
        total = self.combine(losses, step)
        backprop.backward(total)
        return total.detach()

    def before_optimizer_step(self, backprop: Backprop, step: int) -> None:
        """The window's gradients are all in `.grad`; optimizer step `step` follows."""

    def end_step(self, losses: dict[str, Tensor], step: int) -> None:
        """Record the step's (detached, all-reduced) losses, device scalars; stateful balancers
        update here, reading them as numbers only at their own interval."""


class GradientBalancer(LossBalancer):
    """Base class of gradient-level balancers: the update of the shared parameters is
    u = combine_gradients([g_1, ..., g_K]) with g_i = ∇_shared (w_i L_i), each task's gradient
    summed over the accumulation window and averaged over DDP ranks; each task's own
    parameters get ∇(w_i L_i). With nothing shared (a frozen encoder), L = Σ_i w_i L_i.
    """

    gradient_level = True

    def __init__(self, names: list[str], loss_weights: dict[str, float], seed: int = 0) -> None:
        super().__init__(names, loss_weights, seed)
        self._grads: dict[str, Tensor] = {}  # per task: (P,) summed over the window

    def combine_gradients(self, grads: list[Tensor], step: int) -> Tensor:
        """grads: one flat (P,) gradient per task, weighted -> the (P,) update."""
        raise NotImplementedError

    def backward(self, losses: dict[str, Tensor], step: int, backprop: Backprop) -> Tensor:
        shared = backprop.shared
        if not shared:  # nothing shared to combine gradients of
            return super().backward(losses, step, backprop)
        w = self.weights()
        for name, loss in losses.items():
            own = backprop.own[name]
            g = torch.autograd.grad(w[name] * loss, shared + own, retain_graph=True,
                                    allow_unused=True)  # fmt: skip
            flat = flat_gradients(g[: len(shared)], shared)
            self._grads[name] = self._grads.get(name, 0) + flat
            for p, gp in zip(own, g[len(shared) :], strict=True):
                p.grad = gp if p.grad is None else p.grad + gp
        total = sum(w[n] * loss for n, loss in losses.items())
        if backprop.distributed:  # DDP's backward averages the own parameters' gradients
            backprop.backward(0.0 * total)
        return total.detach()  # type: ignore[union-attr]

    def before_optimizer_step(self, backprop: Backprop, step: int) -> None:
        """The window's per-task gradients, averaged over ranks, combined into the update every
        rank applies to the shared parameters."""
        if not self._grads:
            return
        grads = torch.stack(list(self._grads.values()))  # (K, P)
        update = self.combine_gradients(list(backprop.rank_mean(grads)), step)  # (P,)
        offset = 0
        for p in backprop.shared:
            p.grad = update[offset : offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
        self._grads = {}


def flat_gradients(grads: tuple[Tensor | None, ...], params: list[nn.Parameter]) -> Tensor:
    """Concatenate gradients into one float32 (P,) vector (zeros where a parameter got none)."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1).float()
            for g, p in zip(grads, params, strict=True)
        ]
    )
