"""Which task's batch comes next: one small class per formula.

A task sampler gives a probability per task at each global step; the tasks of step s are drawn
with an RNG seeded from (seed, s), so the sequence does not depend on how a run was split into
epochs, processes or restarts, and every DDP rank draws the same task.

Samplers are built by Hydra (`conf/sampler/*.yaml`) with the run's context as keyword
arguments: `sizes` (training rows per task), `names`, `total_steps` and `steps_per_epoch`.
Adaptive samplers learn from the training losses that `observe` reports after each step.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from itertools import accumulate

from torch import Tensor

from mtl.errors import ConfigError


def _normalized(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


class TaskSampler:
    """Base class: `probabilities(step)` over tasks, in the order of `names`."""

    lag: int | None = None  # adaptive samplers: training losses used are at least this old

    def __init__(
        self,
        sizes: Sequence[int],
        names: Sequence[str] | None = None,
        total_steps: int = 1,
        steps_per_epoch: int = 1,
    ) -> None:
        if not sizes or any(n <= 0 for n in sizes):
            raise ValueError(f"every task needs training rows, got sizes {list(sizes)}")
        self.sizes = list(sizes)
        self.names = list(names) if names is not None else [str(i) for i in range(len(sizes))]
        self.total_steps = max(1, total_steps)
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.stopped: dict[str, int] = {}  # task -> the step it leaves the draw from

    def probabilities(self, step: int) -> list[float]:
        raise NotImplementedError

    def stop(self, name: str, from_step: int) -> None:
        """Take a task out of the draw from `from_step` on (per-task early stopping)."""
        self.stopped.setdefault(name, from_step)

    def active(self, step: int) -> list[bool]:
        """Whether each task is still drawn at `step`."""
        return [self.stopped.get(n, step + 1) > step for n in self.names]

    def draw_probabilities(self, step: int) -> list[float]:
        """The formula's probabilities, without the stopped tasks (renormalized)."""
        p, active = list(self.probabilities(step)), self.active(step)
        if all(active):
            return p
        p = [x if on else 0.0 for x, on in zip(p, active, strict=True)]
        return _normalized(p) if sum(p) > 0 else p

    def choose(self, step: int, seed: int, k: int = 1) -> list[int]:
        """k distinct tasks for `step` (weighted sampling without replacement)."""
        rng = random.Random(f"task:{seed}:{step}")
        weights = list(self.draw_probabilities(step))
        active = self.active(step)
        chosen: list[int] = []
        for _ in range(min(k, sum(active) or len(weights))):
            if not any(weights):  # fewer than k tasks have p > 0: fill up uniformly
                weights = [float(on and i not in chosen) for i, on in enumerate(active)]
            i = rng.choices(range(len(weights)), weights=weights)[0]
            chosen.append(i)
            weights[i] = 0.0
        return chosen

    def observe(self, step: int, losses: dict[str, Tensor | float]) -> None:
        """Training feedback: the loss of each task trained at `step` (steps in order), device
        scalars read as numbers only when used; only adaptive samplers use it."""

    def state_dict(self) -> dict:
        return {"stopped": dict(self.stopped)}

    def load_state_dict(self, state: dict) -> None:
        self.stopped = dict(state.get("stopped", {}))

    def _index(self, name: str, key: str) -> int:
        if name not in self.names:
            raise ConfigError(f"sampler.{key}: unknown task {name!r} (tasks: {self.names})")
        return self.names.index(name)


class UniformSampler(TaskSampler):
    """p_i = 1 / K."""

    def probabilities(self, step: int) -> list[float]:
        return [1 / len(self.sizes)] * len(self.sizes)


class ProportionalSampler(TaskSampler):
    """p_i = n_i / Σ_j n_j, with n_i the number of training rows of task i."""

    def probabilities(self, step: int) -> list[float]:
        return _normalized([float(n) for n in self.sizes])


class TemperatureSampler(TaskSampler):
    """p_i ∝ min(n_i, cap)^(1/T): T = 1 is proportional, T → ∞ approaches uniform; the cap
    limits how much a huge task counts (Arivazhagan et al. 2019; Raffel et al. 2020, T5)."""

    def __init__(self, temperature: float = 2.0, cap: int | None = None, **context) -> None:
        super().__init__(**context)
        if temperature <= 0:
            raise ConfigError(f"sampler.temperature must be > 0, got {temperature}")
        if cap is not None and cap <= 0:
            raise ConfigError(f"sampler.cap must be > 0, got {cap}")
        self.temperature, self.cap = temperature, cap

    def probabilities(self, step: int) -> list[float]:
        sizes = [min(n, self.cap) if self.cap else n for n in self.sizes]
        return _normalized([n ** (1 / self.temperature) for n in sizes])


class FixedSampler(TaskSampler):
    """p_i = w_i / Σ_j w_j with weights given per task name."""

    def __init__(self, weights: dict[str, float], **context) -> None:
        super().__init__(**context)
        missing = set(self.names) - set(weights)
        if missing:
            raise ConfigError(f"sampler.weights: no weight for tasks {sorted(missing)}")
        for name, w in weights.items():
            self._index(name, "weights")
            if w < 0:
                raise ConfigError(f"sampler.weights.{name}: must be >= 0, got {w}")
        if not sum(weights.values()) > 0:
            raise ConfigError("sampler.weights: at least one task needs a weight > 0")
        self.weights = _normalized([float(weights[name]) for name in self.names])

    def probabilities(self, step: int) -> list[float]:
        return self.weights


class AnnealedSampler(TaskSampler):
    """p_i ∝ n_i^α with α = 1 − 0.8·(e − 1)/(E − 1) in epoch e of E: proportional at first,
    close to uniform at the end (Stickland & Murray 2019, "BERT and PALs")."""

    def alpha(self, step: int) -> float:
        epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        epoch = min(step // self.steps_per_epoch + 1, epochs)
        return 1.0 if epochs == 1 else 1 - 0.8 * (epoch - 1) / (epochs - 1)

    def probabilities(self, step: int) -> list[float]:
        a = self.alpha(step)
        return _normalized([n**a for n in self.sizes])


class RoundRobinSampler(TaskSampler):
    """Task (s mod K) at step s: every task in turn, no randomness (stopped tasks skipped)."""

    def probabilities(self, step: int) -> list[float]:
        return [1.0 if i == step % len(self.sizes) else 0.0 for i in range(len(self.sizes))]

    def choose(self, step: int, seed: int, k: int = 1) -> list[int]:
        K, active = len(self.sizes), self.active(step)
        turn = [(step + j) % K for j in range(K)]
        return [i for i in turn if active[i]][:k] or turn[:k]


class CurriculumSampler(TaskSampler):
    """A curriculum: the tasks in `order`, each for its share of the steps (`fractions`, default
    equal). In phase i, p_i = 1 − mix + mix/K and every other task gets mix/K."""

    def __init__(
        self,
        order: list[str] | None = None,
        fractions: list[float] | None = None,
        mix: float = 0.0,
        **context,
    ) -> None:
        super().__init__(**context)
        order = list(order) if order else list(self.names)
        self.order = [self._index(name, "order") for name in order]
        fractions = list(fractions) if fractions else [1.0] * len(order)
        if len(fractions) != len(order) or any(f <= 0 for f in fractions):
            raise ConfigError("sampler.fractions: one positive value per task in sampler.order")
        if not 0 <= mix <= 1:
            raise ConfigError(f"sampler.mix must be in [0, 1], got {mix}")
        self.mix = mix
        self.ends = [self.total_steps * c for c in accumulate(_normalized(fractions))]

    def phase(self, step: int) -> int:
        return next((i for i, end in enumerate(self.ends) if step < end), len(self.ends) - 1)

    def probabilities(self, step: int) -> list[float]:
        K = len(self.sizes)
        p = [self.mix / K] * K
        p[self.order[self.phase(step)]] += 1 - self.mix
        return p


class DynamicSampler(TaskSampler):
    """Adaptive: more steps for tasks whose training loss has fallen least.

    r_i = ℓ̄_i / ℓ_i⁰ (an EMA of the task's losses over its first loss); p_i ∝ exp(r_i / τ),
    mixed with uniform: p ← (1 − ε)·p + ε/K so no task starves. Probabilities change every
    `update_every` steps (U) and use only losses observed at least `lag` steps before the
    update, so a resumed run (or a prefetching loader) makes the same choices as an
    uninterrupted one.

    State is bounded: per task the first loss and the EMA of the losses no later request can
    leave out, plus the observations of the last U + lag steps.
    """

    def __init__(
        self,
        tau: float = 0.2,
        update_every: int = 20,
        smoothing: float = 0.9,
        floor: float = 0.1,
        lag: int = 8,
        **context,
    ) -> None:
        super().__init__(**context)
        if tau <= 0 or update_every <= 0 or lag < 0:
            raise ConfigError("sampler: tau and update_every must be > 0 and lag >= 0")
        if not 0 <= smoothing < 1 or not 0 <= floor <= 1:
            raise ConfigError("sampler: smoothing must be in [0, 1) and floor in [0, 1]")
        self.tau, self.update_every, self.smoothing = tau, update_every, smoothing
        self.floor, self.lag = floor, lag
        K = len(self.sizes)
        self.first: list[float | None] = [None] * K
        self.average: list[float | None] = [None] * K
        self.folded_until = self.cutoff(0)  # losses of steps before this are in first/average
        # (step, task, loss) of the others; losses may be device scalars, read when folded
        self.recent: deque[tuple[int, int, Tensor | float]] = deque()
        self._cache: tuple[int, list[float]] | None = None

    def cutoff(self, step: int) -> int:
        """Probabilities at `step` use the losses of steps before this one."""
        return step // self.update_every * self.update_every - self.lag

    def observe(self, step: int, losses: dict[str, Tensor | float]) -> None:
        for name, loss in losses.items():
            self.recent.append((step, self.names.index(name), loss))
        horizon = self.cutoff(step + 1)  # no later step's probabilities leave these out
        while self.recent and self.recent[0][0] < horizon:
            _, task, loss = self.recent.popleft()
            self._fold(self.first, self.average, task, loss)
        self.folded_until = max(self.folded_until, horizon)

    def _fold(self, first: list, average: list, task: int, loss: Tensor | float) -> None:
        loss = float(loss)  # a device value is read here, every `update_every` steps
        first[task] = loss if first[task] is None else first[task]
        a = self.smoothing
        average[task] = loss if average[task] is None else a * average[task] + (1 - a) * loss

    def ratios(self, cutoff: int) -> list[float]:
        """r_i from the losses of steps before `cutoff` (1.0 for a task with none yet)."""
        if cutoff < self.folded_until:
            raise ValueError(f"losses before step {cutoff} are no longer kept apart")
        first, average = list(self.first), list(self.average)
        for step, task, loss in self.recent:
            if step < cutoff:
                self._fold(first, average, task, loss)
        return [
            r / f if f is not None and r is not None and f > 0 else 1.0
            for f, r in zip(first, average, strict=True)
        ]

    def probabilities(self, step: int) -> list[float]:
        boundary = step // self.update_every * self.update_every
        if self._cache is None or self._cache[0] != boundary:
            p = _normalized([math.exp(r / self.tau) for r in self.ratios(boundary - self.lag)])
            K = len(p)
            self._cache = (boundary, [(1 - self.floor) * x + self.floor / K for x in p])
        return self._cache[1]

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "first": list(self.first),
            "average": list(self.average),
            "folded_until": self.folded_until,
            "recent": [[s, t, float(x)] for s, t, x in self.recent],
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.first, self.average = list(state["first"]), list(state["average"])
        self.folded_until = int(state["folded_until"])
        self.recent = deque((int(s), int(t), float(x)) for s, t, x in state["recent"])
        self._cache = None
