"""The scheduling loop's seams: training outcomes back to the choice of tasks.

After each trained step, `TaskFeedback` tells the task sampler the step's per-task losses
(from `training_step`'s output), keeps the batch sampler's state after that step (the loader
may have read ahead of it), and logs `sampler/p/<task>`. Both states go into the checkpoint,
so a resumed run continues with the same tasks and rows as an uninterrupted one.

    files -> readers -> fitted tasks -> streams -> batch sampler -> model -> balancer -> optimizer
                                          ^                          |
                                          +--- task sampler <--------+  (this callback)

`TaskStopping` closes the other loop: validation scores stop tasks that no longer improve.
"""

from __future__ import annotations

import logging
import math

import pytorch_lightning as pl

from mtl.model import is_log_step
from mtl.sampling import TaskSampler

log = logging.getLogger(__name__)


class TaskFeedback(pl.Callback):
    def __init__(self, task_sampler: TaskSampler) -> None:
        self.task_sampler = task_sampler
        self.trained_state: dict | None = None  # batch sampler state after the last trained step
        self._restored: dict | None = None
        self._seen_step: int | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.task_sampler.observe(batch["step"], outputs["losses"])
        self.trained_state = batch["sampler_state"]
        step, seen, self._seen_step = trainer.global_step, self._seen_step, trainer.global_step
        if step != seen and is_log_step(step - 1, trainer.log_every_n_steps):
            # at the optimizer step just taken, as the model's training scalars
            p = zip(self.task_sampler.names, batch["probabilities"], strict=True)
            metrics = {f"sampler/p/{name}": value for name, value in p}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step - 1)

    def on_train_start(self, trainer, pl_module) -> None:
        """Continue the batch streams where the checkpoint's last trained step left them."""
        if self._restored is not None:
            trainer.train_dataloader.batch_sampler.load_state_dict(self._restored)
            self._restored = None

    def state_dict(self) -> dict:
        return {"task_sampler": self.task_sampler.state_dict(), "batch_sampler": self.trained_state}

    def load_state_dict(self, state: dict) -> None:
        self.task_sampler.load_state_dict(state["task_sampler"])
        self.trained_state = self._restored = state["batch_sampler"]


class TaskStopping(pl.Callback):
    """Per-task early stopping: a task whose score (val/<task>/score) has not improved for its
    `patience` validations stops. Its head stops learning, it leaves the task sampler's draw
    (`delay` steps later: batches the loader already drew still train), and once every task
    that counts in val/score has stopped, so does the run. Validations up to `start_step` (a
    probe's steps) do not count. Restored on resume."""

    def __init__(self, task_sampler: TaskSampler, patience: dict[str, int], counted: list[str],
                 delay: int, start_step: int = 0) -> None:  # fmt: skip
        self.task_sampler, self.patience, self.counted, self.delay = (
            task_sampler, patience, counted, delay
        )  # fmt: skip
        self.start_step = start_step
        self.best: dict[str, float] = {}
        self.waited: dict[str, int] = {}
        self.stopped: dict[str, int] = {}  # task -> the step it stopped at

    def on_train_start(self, trainer, pl_module) -> None:
        pl_module.frozen_heads = set(self.stopped)

    def on_validation_end(self, trainer, pl_module) -> None:
        step = trainer.global_step
        if trainer.sanity_checking or trainer.state.fn != "fit" or step <= self.start_step:
            return
        for name, patience in self.patience.items():
            score = float(trainer.callback_metrics.get(f"val/{name}/score", float("nan")))
            if name in self.stopped or math.isnan(score):
                continue
            if name not in self.best or score > self.best[name]:
                self.best[name], self.waited[name] = score, 0
                continue
            self.waited[name] += 1
            if self.waited[name] >= patience:
                self.stopped[name] = step
                self.task_sampler.stop(name, step + self.delay)
                pl_module.frozen_heads.add(name)
                log.info("task %s stopped at step %d: no better score in %d validations "
                         "(best %.4f)", name, step, patience, self.best[name])  # fmt: skip
                for logger in trainer.loggers:
                    logger.log_metrics({f"stopped/{name}": 1.0}, step=step)
        if self.counted and all(name in self.stopped for name in self.counted):
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"best": self.best, "waited": self.waited, "stopped": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.waited = dict(state["best"]), dict(state["waited"])
        self.stopped = dict(state["stopped"])
