"""The multi-task DataModule: loaders over tasks that `load_tasks` has read, fitted and tokenized.

Training reads one step's batch at a time from the multi-task batch sampler (the task sampler
picks the task, the task's stream the rows); evaluation reads each task's split in
length-sorted batches, one loader per task.
"""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mtl.data.batching import sorted_batches
from mtl.data.loading import DataConfig, TaskData, TaskDataset
from mtl.data.streams import MultiTaskBatchSampler, StepBatch, TaskBatchStream
from mtl.errors import ConfigError
from mtl.sampling import TaskSampler


class MultiTaskDataset(Dataset):
    """The tasks' training splits; a step's batch holds one padded part per task."""

    def __init__(self, parts: dict[str, TaskDataset]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts.values())

    def __getitems__(self, step: StepBatch) -> dict:
        return {
            "step": step.step,
            "probabilities": step.probabilities,
            "sampler_state": step.state,
            "parts": [self.parts[t].batch(rows, f"step:{step.step}") for t, rows in step.parts],
        }


def _passthrough_collate(batch: dict) -> dict:
    return batch  # __getitems__ already returns a collated batch


def steps_per_epoch(
    lengths: dict[str, list[int]], batch_sizes: dict[str, int], cfg: DataConfig, seed: int
) -> int:
    """`data.steps_per_epoch`, or the batches of one pass over every task (one pass in
    expectation): Σ ceil(n / batch size), or with a token budget the first pass's batches."""
    if cfg.steps_per_epoch:
        return cfg.steps_per_epoch
    if cfg.max_tokens is None:
        return sum(math.ceil(len(x) / batch_sizes[t]) for t, x in lengths.items())
    return sum(
        TaskBatchStream(t, x, batch_sizes[t], seed, max_tokens=cfg.max_tokens).batches_per_pass
        for t, x in lengths.items()
    )


class MultiTaskDataModule(pl.LightningDataModule):
    def __init__(
        self, data: dict[str, TaskData], cfg: DataConfig, task_sampler: TaskSampler, seed: int = 0
    ) -> None:
        super().__init__()
        self.data, self.cfg, self.task_sampler, self.seed = data, cfg, task_sampler, seed
        depth = 2 * cfg.num_workers + 1  # batches a loader may draw ahead of training
        if task_sampler.lag is not None and task_sampler.lag < depth:
            raise ConfigError(
                f"sampler.lag: {task_sampler.lag} is below the {depth} batches the loader draws "
                f"ahead with data.num_workers={cfg.num_workers}; a resumed run would choose "
                "differently"
            )

    @property
    def batch_sizes(self) -> dict[str, int]:
        """Each task's own batch size, or data.batch_size."""
        return {n: d.task.spec.batch_size or self.cfg.batch_size for n, d in self.data.items()}

    def train_dataloader(self) -> DataLoader:
        parts = {name: d.splits["train"] for name, d in self.data.items()}
        trainer = self.trainer
        batch_sampler = MultiTaskBatchSampler(
            {name: p.lengths for name, p in parts.items()},
            self.task_sampler,
            self.batch_sizes,
            self.task_sampler.steps_per_epoch,  # the run's epoch, computed once (train.py)
            self.seed,
            tasks_per_step=self.cfg.tasks_per_step,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            max_tokens=self.cfg.max_tokens,
        )
        return self._loader(MultiTaskDataset(parts), batch_sampler)

    def eval_dataloaders(self, split: str) -> list[DataLoader]:
        """One loader per task that has `split`, in length-sorted batches (least padding)."""
        loaders = []
        for d in self.data.values():
            if split in d.splits:
                dataset = d.splits[split]
                batches = sorted_batches(dataset.lengths, self.cfg.eval_batch_size)
                loaders.append(self._loader(dataset, batches))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self.eval_dataloaders("val")

    def fixed_batches(self, size: int) -> dict[str, dict]:
        """The first `size` training rows of each task, as one batch per task."""
        return {
            name: d.splits["train"].batch(list(range(min(size, len(d.splits["train"])))))
            for name, d in self.data.items()
        }

    @property
    def _on_gpu(self) -> bool:
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _loader(self, dataset: Dataset, batch_sampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=_passthrough_collate,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            pin_memory=self._on_gpu,  # copied to the GPU without blocking
            # its own generator: starting an iterator must not draw from the global RNG, or a
            # resumed run's dropout masks would drift from the uninterrupted run's
            generator=torch.Generator().manual_seed(self.seed),
        )
