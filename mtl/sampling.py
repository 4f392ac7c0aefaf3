"""Which task's batch comes next: task samplers and the multi-task batch sampler.

A task sampler gives a probability per task at each step; the task of global step s is drawn
with an RNG seeded from (seed, s), so the sequence does not depend on how a run was split into
epochs, processes or restarts.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

from mtl.data.batching import bucketed_batches


class TaskSampler:
    """Base class: `probabilities(step)` over tasks, in the order of `sizes`."""

    def __init__(self, sizes: Sequence[int]) -> None:
        if not sizes or any(n <= 0 for n in sizes):
            raise ValueError(f"every task needs training rows, got sizes {list(sizes)}")
        self.sizes = list(sizes)

    def probabilities(self, step: int) -> list[float]:
        raise NotImplementedError

    def choose(self, step: int, seed: int) -> int:
        rng = random.Random(f"task:{seed}:{step}")
        return rng.choices(range(len(self.sizes)), weights=self.probabilities(step))[0]


def _normalized(weights: list[float]) -> list[float]:
    total = sum(weights)
    return [w / total for w in weights]


class UniformSampler(TaskSampler):
    """p_i = 1 / K."""

    def probabilities(self, step: int) -> list[float]:
        return [1 / len(self.sizes)] * len(self.sizes)


class ProportionalSampler(TaskSampler):
    """p_i = n_i / Σ_j n_j, with n_i the number of training rows of task i."""

    def probabilities(self, step: int) -> list[float]:
        return _normalized([float(n) for n in self.sizes])


class TemperatureSampler(TaskSampler):
    """p_i ∝ n_i^(1/T): T = 1 is proportional, T → ∞ approaches uniform (Arivazhagan et al.
    2019, "Massively Multilingual Neural Machine Translation in the Wild")."""

    def __init__(self, sizes: Sequence[int], temperature: float = 2.0) -> None:
        super().__init__(sizes)
        if temperature <= 0:
            raise ValueError(f"sampler.temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def probabilities(self, step: int) -> list[float]:
        return _normalized([n ** (1 / self.temperature) for n in self.sizes])


class TaskBatchStream:
    """An endless stream of one task's training batches: pass after shuffled pass."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, key: str) -> None:
        self.lengths, self.batch_size, self.seed, self.key = lengths, batch_size, seed, key
        self.epoch, self.position = 0, 0
        self._batches = self._pass(0)

    def _pass(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"batches:{self.seed}:{self.key}:{epoch}")
        return bucketed_batches(self.lengths, self.batch_size, rng)

    def next(self) -> list[int]:
        if self.position == len(self._batches):
            self.epoch, self.position = self.epoch + 1, 0
            self._batches = self._pass(self.epoch)
        self.position += 1
        return self._batches[self.position - 1]


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Yields, step after step, the next batch of the task the task sampler picks.

    Indices are global: row r of task i is `offsets[i] + r` in the MultiTaskDataset.
    One epoch is `steps_per_epoch` steps; task streams carry over between epochs.
    """

    def __init__(
        self,
        task_lengths: list[list[int]],
        task_sampler: TaskSampler,
        batch_size: int,
        steps_per_epoch: int,
        seed: int,
    ) -> None:
        self.task_sampler = task_sampler
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.offsets = [sum(len(x) for x in task_lengths[:i]) for i in range(len(task_lengths))]
        self.streams = [
            TaskBatchStream(lengths, batch_size, seed, str(i))
            for i, lengths in enumerate(task_lengths)
        ]
        self.step = 0  # global step of the next batch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.step = epoch * self.steps_per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps_per_epoch):
            task = self.task_sampler.choose(self.step, self.seed)
            self.step += 1
            yield [self.offsets[task] + r for r in self.streams[task].next()]
