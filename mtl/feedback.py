"""The scheduling loop's one seam: training losses back to the task sampler.

After each trained step, `TaskFeedback` tells the task sampler the step's per-task losses
(from `training_step`'s output), keeps the batch sampler's state after that step (the loader
may have read ahead of it), and logs `sampler/p/<task>`. Both states go into the checkpoint,
so a resumed run continues with the same tasks and rows as an uninterrupted one.

    files -> readers -> fitted tasks -> streams -> batch sampler -> model -> balancer -> optimizer
                                          ^                          |
                                          +--- task sampler <--------+  (this callback)
"""

from __future__ import annotations

import pytorch_lightning as pl

from mtl.model import is_log_step
from mtl.sampling import TaskSampler


class TaskFeedback(pl.Callback):
    def __init__(self, task_sampler: TaskSampler) -> None:
        self.task_sampler = task_sampler
        self.trained_state: dict | None = None  # batch sampler state after the last trained step
        self._restored: dict | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = batch["step"]
        self.task_sampler.observe(step, outputs["losses"])
        self.trained_state = batch["sampler_state"]
        if is_log_step(step, trainer.log_every_n_steps):
            p = zip(self.task_sampler.names, batch["probabilities"], strict=True)
            metrics = {f"sampler/p/{name}": value for name, value in p}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

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
