"""Batch streams: which rows each training step reads.

Each task has an endless stream of length-bucketed batches (pass after shuffled pass, keyed by
the task's name, so reordering `task=[...]` changes nothing). The multi-task batch sampler asks
the task sampler which task(s) train at each step and takes the next batch of each.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from torch.utils.data import Sampler

from mtl.data.batching import bucketed_batches
from mtl.errors import ConfigError
from mtl.sampling import TaskSampler


class TaskBatchStream:
    """An endless stream of one task's training batches: pass after shuffled pass.

    Rows are dealt round-robin to `world_size` ranks: batch b of a pass holds
    `batch_size · world_size` rows (or `max_tokens · world_size` tokens) and this rank takes
    every world_size-th of them.
    """

    def __init__(
        self,
        task: str,
        lengths: list[int],
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        max_tokens: int | None = None,
    ) -> None:
        self.task, self.lengths, self.batch_size, self.seed = task, lengths, batch_size, seed
        self.max_tokens = max_tokens
        self.rank, self.world_size = rank, world_size
        if len(lengths) < world_size:
            raise ConfigError(f"task {task}: {len(lengths)} training rows for {world_size} ranks")
        self.epoch, self.position = 0, 0
        self._batches = self._pass(0)

    def _pass(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"batches:{self.seed}:{self.task}:{epoch}")
        budget = self.max_tokens * self.world_size if self.max_tokens else None
        batches = bucketed_batches(
            self.lengths, self.batch_size * self.world_size, rng, max_tokens=budget
        )
        if self.world_size == 1:
            return batches
        return [b[self.rank :: self.world_size] for b in batches if len(b) >= self.world_size]

    @property
    def batches_per_pass(self) -> int:
        """The batches of the current pass (with a token budget, passes differ a little)."""
        return len(self._batches)

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
            "max_tokens": self.max_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        saved = (state["batch_size"], state["world_size"], state.get("max_tokens"))
        mine = (self.batch_size, self.world_size, self.max_tokens)
        if saved != mine:
            raise ConfigError(
                f"resume: the checkpoint's batches were (batch_size, ranks, max_tokens) = {saved}, "
                f"this run's are {mine}; resume with the same settings"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = self._pass(self.epoch)


@dataclass
class StepBatch:
    """What one step trains on, and what the training loop needs to know about it."""

    step: int
    parts: list[tuple[str, list[int]]]  # (task, row indices) per task trained this step
    probabilities: list[float]  # the task sampler's probabilities for this step
    state: dict  # the batch sampler's state right after this step


class MultiTaskBatchSampler(Sampler[StepBatch]):
    """Yields, step after step, the next batch of each of the `tasks_per_step` tasks that the
    task sampler picks (each task in batches of its own size).

    One epoch is `steps_per_epoch` steps; task streams carry over between epochs. Each yielded
    StepBatch carries the sampler state right *after* it: once that step is trained, it is the
    state to resume from (the loader itself may have prefetched further).
    """

    def __init__(
        self,
        task_lengths: dict[str, list[int]],
        task_sampler: TaskSampler,
        batch_sizes: dict[str, int],
        steps_per_epoch: int,
        seed: int,
        tasks_per_step: int = 1,
        rank: int = 0,
        world_size: int = 1,
        max_tokens: int | None = None,
    ) -> None:
        if list(task_lengths) != task_sampler.names:
            raise ValueError(f"tasks {list(task_lengths)} != sampler's {task_sampler.names}")
        self.task_sampler = task_sampler
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.tasks_per_step = tasks_per_step
        self.streams = {
            name: TaskBatchStream(
                name, lengths, batch_sizes[name], seed, rank, world_size, max_tokens
            )
            for name, lengths in task_lengths.items()
        }
        self.step = 0  # global step of the next batch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def state_dict(self) -> dict:
        return {"step": self.step, "streams": {n: s.state_dict() for n, s in self.streams.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["streams"]) != set(self.streams):
            raise ConfigError(
                f"resume: the checkpoint trained tasks {sorted(state['streams'])}, this run "
                f"has {sorted(self.streams)}"
            )
        self.step = int(state["step"])
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name])

    def __iter__(self) -> Iterator[StepBatch]:
        names = self.task_sampler.names
        for _ in range(self.steps_per_epoch - self.step % self.steps_per_epoch):
            probabilities = self.task_sampler.draw_probabilities(self.step)
            tasks = self.task_sampler.choose(self.step, self.seed, self.tasks_per_step)
            parts = [(names[t], self.streams[names[t]].next()) for t in tasks]
            step, self.step = self.step, self.step + 1
            yield StepBatch(step, parts, list(probabilities), self.state_dict())
