"""Which task's batch comes next: task samplers and the multi-task batch sampler.

A task sampler gives a probability per task at each global step; the tasks of step s are drawn
with an RNG seeded from (seed, s), so the sequence does not depend on how a run was split into
epochs, processes or restarts, and every DDP rank draws the same task.

Samplers are built by Hydra (`conf/sampler/*.yaml`) with the run's context as keyword
arguments: `sizes` (training rows per task), `names`, `total_steps` and `steps_per_epoch`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from torch.utils.data import Sampler

from mtl.data.batching import bucketed_batches
from mtl.errors import ConfigError


def _normalized(weights: Sequence[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


class TaskSampler:
    """Base class: `probabilities(step)` over tasks, in the order of `names`."""

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

    def probabilities(self, step: int) -> list[float]:
        raise NotImplementedError

    def choose(self, step: int, seed: int, k: int = 1) -> list[int]:
        """k distinct tasks for `step` (weighted sampling without replacement)."""
        rng = random.Random(f"task:{seed}:{step}")
        weights = list(self.probabilities(step))
        chosen: list[int] = []
        for _ in range(min(k, len(weights))):
            if not any(weights):  # fewer than k tasks have p > 0: fill up uniformly
                weights = [0.0 if i in chosen else 1.0 for i in range(len(weights))]
            i = rng.choices(range(len(weights)), weights=weights)[0]
            chosen.append(i)
            weights[i] = 0.0
        return chosen

    def observe(self, step: int, task: int, loss: float) -> None:
        """Training feedback (the task's loss at `step`); only adaptive samplers use it."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

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
    """Task (s mod K) at step s: every task in turn, no randomness."""

    def probabilities(self, step: int) -> list[float]:
        return [1.0 if i == step % len(self.sizes) else 0.0 for i in range(len(self.sizes))]

    def choose(self, step: int, seed: int, k: int = 1) -> list[int]:
        K = len(self.sizes)
        return [(step + j) % K for j in range(min(k, K))]


class SequentialSampler(TaskSampler):
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
        self.ends = [self.total_steps * c for c in _cumulative(_normalized(fractions))]

    def phase(self, step: int) -> int:
        return next((i for i, end in enumerate(self.ends) if step < end), len(self.ends) - 1)

    def probabilities(self, step: int) -> list[float]:
        K = len(self.sizes)
        p = [self.mix / K] * K
        p[self.order[self.phase(step)]] += 1 - self.mix
        return p


def _cumulative(xs: list[float]) -> list[float]:
    out, total = [], 0.0
    for x in xs:
        total += x
        out.append(total)
    return out


class LossProgressSampler(TaskSampler):
    """Adaptive: more steps for tasks whose training loss has fallen least.

    r_i = ℓ̄_i / ℓ_i⁰ (smoothed recent loss over the task's first losses); p_i ∝ exp(r_i / τ),
    mixed with uniform: p ← (1 − ε)·p + ε/K so no task starves. Probabilities change every
    `update_every` steps and use only losses observed at least `lag` steps before the update,
    so a resumed run (or a prefetching loader) makes the same choices as an uninterrupted one.
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
        self.history: list[tuple[int, int, float]] = []  # (step, task, loss)
        self._cache: tuple[int, list[float]] | None = None

    def observe(self, step: int, task: int, loss: float) -> None:
        self.history.append((step, task, loss))

    def ratios(self, cutoff: int) -> list[float]:
        """r_i from the losses observed before `cutoff` (1.0 for a task with none yet)."""
        K = len(self.sizes)
        first: list[float | None] = [None] * K
        recent: list[float | None] = [None] * K
        for step, task, loss in self.history:
            if step >= cutoff:
                continue
            first[task] = loss if first[task] is None else first[task]
            prev = recent[task]
            recent[task] = (
                loss if prev is None else self.smoothing * prev + (1 - self.smoothing) * loss
            )
        return [
            r / f if f is not None and r is not None and f > 0 else 1.0
            for f, r in zip(first, recent, strict=True)
        ]

    def probabilities(self, step: int) -> list[float]:
        boundary = step // self.update_every * self.update_every
        if self._cache is None or self._cache[0] != boundary:
            ratios = self.ratios(boundary - self.lag)
            p = _normalized([math.exp(r / self.tau) for r in ratios])
            K = len(p)
            self._cache = (boundary, [(1 - self.floor) * x + self.floor / K for x in p])
        return self._cache[1]

    def state_dict(self) -> dict:
        return {"history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.history = [(int(s), int(t), float(x)) for s, t, x in state.get("history", [])]
        self._cache = None


class TaskBatchStream:
    """An endless stream of one task's training batches: pass after shuffled pass.

    Rows are dealt round-robin to `world_size` ranks: batch b of a pass holds
    `batch_size · world_size` rows and this rank takes every world_size-th of them.
    """

    def __init__(
        self,
        lengths: list[int],
        batch_size: int,
        seed: int,
        key: str,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.lengths, self.batch_size, self.seed, self.key = lengths, batch_size, seed, key
        self.rank, self.world_size = rank, world_size
        if len(lengths) < world_size:
            raise ConfigError(f"task {key}: {len(lengths)} training rows for {world_size} ranks")
        self.epoch, self.position = 0, 0
        self._batches = self._pass(0)

    def _pass(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"batches:{self.seed}:{self.key}:{epoch}")
        batches = bucketed_batches(self.lengths, self.batch_size * self.world_size, rng)
        if self.world_size == 1:
            return batches
        return [b[self.rank :: self.world_size] for b in batches if len(b) >= self.world_size]

    def next(self) -> list[int]:
        if self.position >= len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._pass(self.epoch)
        self.position += 1
        return self._batches[self.position - 1]

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        saved = (state["batch_size"], state["world_size"])
        if saved != (self.batch_size, self.world_size):
            raise ConfigError(
                f"resume: the checkpoint's batches were (batch_size, ranks) = {saved}, this run's "
                f"are {(self.batch_size, self.world_size)}; resume with the same settings"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._pass(self.epoch)


@dataclass
class StepBatch:
    """What one step trains on: (task index, row indices) per task, and the sampler state."""

    step: int
    parts: list[tuple[int, list[int]]]
    state: dict  # the batch sampler's state right after this step


class MultiTaskBatchSampler(Sampler[StepBatch]):
    """Yields, step after step, the next batch of each of the `tasks_per_step` tasks that the
    task sampler picks.

    One epoch is `steps_per_epoch` steps; task streams carry over between epochs. Each yielded
    StepBatch carries the sampler state right *after* it: once that step is trained, it is the
    state to resume from (the loader itself may have prefetched further).
    """

    def __init__(
        self,
        task_lengths: list[list[int]],
        task_sampler: TaskSampler,
        batch_size: int,
        steps_per_epoch: int,
        seed: int,
        tasks_per_step: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.task_sampler = task_sampler
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.tasks_per_step = tasks_per_step
        self.streams = [
            TaskBatchStream(lengths, batch_size, seed, str(i), rank, world_size)
            for i, lengths in enumerate(task_lengths)
        ]
        self.step = 0  # global step of the next batch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def state_dict(self) -> dict:
        return {"step": self.step, "streams": [s.state_dict() for s in self.streams]}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        for stream, s in zip(self.streams, state["streams"], strict=True):
            stream.load_state_dict(s)

    def __iter__(self) -> Iterator[StepBatch]:
        for _ in range(self.steps_per_epoch - self.step % self.steps_per_epoch):
            tasks = self.task_sampler.choose(self.step, self.seed, self.tasks_per_step)
            parts = [(t, self.streams[t].next()) for t in tasks]
            step, self.step = self.step, self.step + 1
            yield StepBatch(step, parts, self.state_dict())
