"""The multi-task DataModule: read and validate each task's splits, tokenize once, batch."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mtl.data.batching import collate, sorted_batches
from mtl.data.cache import TokenizedTexts, tokenize_cached
from mtl.data.readers import Examples, read_examples
from mtl.data.splits import split_indices
from mtl.errors import ConfigError, DataError
from mtl.instantiate import build
from mtl.sampling import MultiTaskBatchSampler, StepBatch, TaskSampler
from mtl.tasks import ClassificationTask, Task
from mtl.tokenizer import pad_id

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    batch_size: int = 32
    eval_batch_size: int = 64
    steps_per_epoch: int | None = None  # None: Σ_i ceil(n_i / batch_size), one pass in expectation
    tasks_per_step: int = 1  # k > 1: a joint step trains on one batch of each of k tasks
    on_bad_row: str = "error"  # error: stop at the first bad row | skip: leave out and count
    cache_dir: str | None = None  # token-id cache; None disables it
    num_workers: int = 0


class TaskDataset(Dataset):
    """One split of one task: token ids and labels; `__getitems__` builds a padded batch."""

    def __init__(self, task: Task, tokens: TokenizedTexts, labels: list, pad_id: int) -> None:
        self.task, self.tokens, self.pad_id = task, tokens, pad_id
        dtype = torch.float32 if task.type == "regression" else torch.long
        self.labels = torch.tensor(labels, dtype=dtype)

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, rows: list[int]) -> dict[str, Tensor | str]:
        """One task's padded batch: task, input_ids, token_type_ids, attention_mask, labels."""
        part: dict[str, Tensor | str] = {"task": self.task.name}
        part.update(collate(self.tokens, rows, self.pad_id))
        part["labels"] = self.labels[rows]
        part["rows"] = torch.tensor(rows)  # row numbers within the split
        return part

    def __getitems__(self, rows: list[int]) -> dict:
        return {"parts": [self.batch(rows)]}

    @property
    def lengths(self) -> list[int]:
        return self.tokens.lengths.tolist()


class MultiTaskDataset(Dataset):
    """The tasks' training splits; a step's batch holds one padded part per task."""

    def __init__(self, parts: list[TaskDataset]) -> None:
        self.parts = parts

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitems__(self, step: StepBatch) -> dict:
        return {
            "step": step.step,
            "sampler_state": step.state,
            "parts": [self.parts[task].batch(rows) for task, rows in step.parts],
        }


def _passthrough_collate(batch: dict) -> dict:
    return batch  # __getitems__ already returns a collated batch


class MultiTaskDataModule(pl.LightningDataModule):
    def __init__(
        self,
        tasks: dict[str, Task],
        tokenizer: Tokenizer,
        data: DataConfig,
        sampler: dict,
        seed: int = 0,
        total_steps: int = 1,
    ) -> None:
        super().__init__()
        self.tasks, self.tokenizer, self.cfg = tasks, tokenizer, data
        self.sampler_cfg, self.seed, self.total_steps = sampler, seed, total_steps
        self.pad_id = pad_id(tokenizer)
        self.splits: dict[str, dict[str, TaskDataset]] = {}
        self.skipped: dict[str, int] = {}
        self.task_sampler: TaskSampler | None = None
        self._trained_state: dict | None = None  # batch sampler state after the last trained step
        self._restored: dict | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        for name, task in self.tasks.items():
            self.splits[name] = self._load_task(task)
        if not 1 <= self.cfg.tasks_per_step <= len(self.tasks):
            raise DataError(
                f"data.tasks_per_step: must be between 1 and the number of tasks "
                f"({len(self.tasks)}), got {self.cfg.tasks_per_step}"
            )
        lag = self.sampler_cfg.get("lag")
        depth = 2 * self.cfg.num_workers + 1  # batches a loader may draw ahead of training
        if lag is not None and lag < depth:
            raise ConfigError(
                f"sampler.lag: {lag} is below the {depth} batches the loader draws ahead with "
                f"data.num_workers={self.cfg.num_workers}; a resumed run would choose differently"
            )
        self.task_sampler = build(
            "sampler",
            self.sampler_cfg,
            sizes=[len(self.splits[name]["train"]) for name in self.tasks],
            names=list(self.tasks),
            total_steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch(),
        )

    def _load_task(self, task: Task) -> dict[str, TaskDataset]:
        spec = task.spec
        bad = self.cfg.on_bad_row
        if bad not in ("error", "skip"):
            raise DataError(f"data.on_bad_row: {bad!r} is not 'error' or 'skip'")
        examples: dict[str, Examples] = {}
        skipped = 0
        if spec.files:
            for split in ("train", *(s for s in spec.files if s != "train")):
                result = read_examples(Path(spec.files[split]), task, on_bad_row=bad)
                examples[split] = result.examples
                skipped += self._report_skips(task, result)
                if split == "train" and isinstance(task, ClassificationTask):
                    task.close_label_set()
        else:
            group = spec.split.group_column
            result = read_examples(Path(spec.file), task, group_column=group, on_bad_row=bad)
            skipped += self._report_skips(task, result)
            if isinstance(task, ClassificationTask):
                task.close_label_set()
            split = spec.split
            val, test = split.val_fraction, split.test_fraction
            if not (val > 0 and test >= 0 and val + test < 1):
                raise ConfigError(
                    f"task.{task.name}.split: val_fraction > 0, test_fraction >= 0 and their "
                    f"sum < 1 are needed, got {split.val_fraction} and {split.test_fraction}"
                )
            rows = split_indices(len(result.examples), result.examples.groups, split)
            examples = {name: result.examples.subset(idx) for name, idx in rows.items()}
        self.skipped[task.name] = skipped
        if "val" not in examples:
            raise DataError(f"task.{task.name}: no validation split (add files.val or a split)")
        for name, needed in (("train", 1), ("val", 2)):
            if len(examples.get(name, ())) < needed:
                raise DataError(
                    f"task.{task.name}: the {name} split has {len(examples.get(name, ()))} rows "
                    f"(at least {needed} needed; were rows skipped as bad?)"
                )
        if spec.train_fraction < 1:
            train = examples["train"]
            keep = sorted(
                torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))[
                    : max(1, round(spec.train_fraction * len(train)))
                ].tolist()
            )
            examples["train"] = train.subset(keep)
        task.fit_labels(examples["train"].labels)
        cache = Path(self.cfg.cache_dir) if self.cfg.cache_dir else None
        out = {}
        for split, ex in examples.items():
            tokens, hit = tokenize_cached(self.tokenizer, ex.texts, ex.pairs, cache)
            log.info("%s/%s: %d rows, tokens %s", task.name, split, len(ex),
                     "from cache" if hit else "computed")  # fmt: skip
            out[split] = TaskDataset(task, tokens, ex.labels, self.pad_id)
        return out

    @staticmethod
    def _report_skips(task: Task, result) -> int:
        if result.skipped:
            log.warning("task %s: skipped %d bad rows (first: %s)", task.name, result.skipped,
                        result.first_skipped)  # fmt: skip
        return result.skipped

    @property
    def train_sizes(self) -> dict[str, int]:
        return {name: len(splits["train"]) for name, splits in self.splits.items()}

    def steps_per_epoch(self) -> int:
        if self.cfg.steps_per_epoch:
            return self.cfg.steps_per_epoch
        return sum(math.ceil(n / self.cfg.batch_size) for n in self.train_sizes.values())

    def train_dataloader(self) -> DataLoader:
        parts = [self.splits[name]["train"] for name in self.tasks]
        assert self.task_sampler is not None, "setup() first"
        trainer = self.trainer
        batch_sampler = MultiTaskBatchSampler(
            [p.lengths for p in parts],
            self.task_sampler,
            self.cfg.batch_size,
            self.steps_per_epoch(),
            self.seed,
            tasks_per_step=self.cfg.tasks_per_step,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        if self._restored:
            batch_sampler.load_state_dict(self._restored["batch_sampler"])
            self.task_sampler.load_state_dict(self._restored["task_sampler"])
            self._restored = None
        return self._loader(MultiTaskDataset(parts), batch_sampler)

    # ---- exact resume: the checkpoint holds where the task and batch streams stand ----------

    def record_trained(self, state: dict) -> None:
        """Called after each optimizer step with the state that follows the trained batch."""
        self._trained_state = state

    def state_dict(self) -> dict:
        if self._trained_state is None or self.task_sampler is None:
            return {}
        return {
            "batch_sampler": self._trained_state,
            "task_sampler": self.task_sampler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._restored = state or None

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        loaders = []
        for name in self.tasks:
            if split in self.splits[name]:
                ds = self.splits[name][split]
                batches = sorted_batches(ds.lengths, self.cfg.eval_batch_size)
                loaders.append(self._loader(ds, batches))
        return loaders

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def _loader(self, dataset: Dataset, batch_sampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=_passthrough_collate,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            # its own generator: starting an iterator must not draw from the global RNG, or a
            # resumed run's dropout masks would drift from the uninterrupted run's
            generator=torch.Generator().manual_seed(self.seed),
        )
