"""Read each task's splits, fit the task on its training rows, tokenize once.

`load_tasks` is the one phase that turns task specs into data: it returns, per task, the
fitted (immutable) task and its tokenized splits. The model's heads are sized from those
fitted tasks, so nothing can be built in the wrong order.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch import Tensor
from torch.utils.data import Dataset

from mtl.data.batching import collate
from mtl.data.cache import TokenizedTexts, tokenize_cached
from mtl.data.fingerprint import file_fingerprint
from mtl.data.readers import Examples, ReadResult, read_examples
from mtl.data.splits import split_indices
from mtl.errors import DataError, require
from mtl.tasks import Task, TaskSpec, TextFeatures, kind_named
from mtl.tokenizer import NO_WORD_PIECE, has_word_piece, pad_id

log = logging.getLogger(__name__)


class OnBadRow(str, Enum):
    error = "error"  # stop at the first bad row, naming file, line and column
    skip = "skip"  # leave bad rows out and count them per task


@dataclass
class DataConfig:
    batch_size: int = 16  # small batches: the default run finishes in minutes on 2 CPU cores
    eval_batch_size: int = 64
    steps_per_epoch: int | None = None  # None: Σ_i ceil(n_i / batch_size), one pass in expectation
    tasks_per_step: int = 1  # k > 1: a joint step trains on one batch of each of k tasks
    max_tokens: int | None = None  # token budget per batch: rows × longest row <= max_tokens
    pad_to_multiple: int = 1  # batch widths rounded up to a multiple (GPU: repeating shapes)
    overfit_rows: int | None = None  # debug: train on each task's first N rows, validate on them
    on_bad_row: OnBadRow = OnBadRow.error
    cache_dir: str | None = None  # token-id cache; None disables it
    num_workers: int = 0

    def check(self) -> None:
        """The ranges of these settings; errors name the `data.` key."""
        for key in ("batch_size", "eval_batch_size"):
            require(f"data.{key}", getattr(self, key), getattr(self, key) > 0, "> 0")
        for key in ("steps_per_epoch", "max_tokens"):
            value = getattr(self, key)
            require(f"data.{key}", value, value is None or value > 0, "> 0 or null")
        rows = self.overfit_rows
        require("data.overfit_rows", rows, rows is None or rows > 1, "> 1 or null")
        require("data.pad_to_multiple", self.pad_to_multiple, self.pad_to_multiple >= 1, ">= 1")
        require("data.tasks_per_step", self.tasks_per_step, self.tasks_per_step >= 1, ">= 1")
        require("data.num_workers", self.num_workers, self.num_workers >= 0, ">= 0")


class TaskDataset(Dataset):
    """One split of one task: token ids and targets; `__getitems__` builds a padded batch.

    With `features` (the frozen encoder's sentence vectors, see mtl/transfer.py) a batch also
    carries them, and the model uses them instead of running the encoder. `seed` seeds what a
    task draws per batch (the masked-LM task's masks)."""

    def __init__(
        self,
        task: Task,
        tokens: TokenizedTexts,
        targets: Tensor,
        pad_id: int,
        seed: int = 0,
        pad_to_multiple: int = 1,
    ) -> None:
        self.task, self.tokens, self.targets, self.pad_id = task, tokens, targets, pad_id
        self.seed, self.pad_to_multiple = seed, pad_to_multiple
        self.features: Tensor | None = None  # (N, C)
        self.text_features: Tensor | None = None  # (N, F): the task's text statistics

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, rows: list[int], key: str = "eval") -> dict[str, Tensor | str]:
        """One task's padded batch: task, input_ids, token_type_ids, attention_mask, labels.
        `key` names the batch for what the task draws per batch (training: its step)."""
        part: dict[str, Tensor | str] = {"task": self.task.name}
        part.update(collate(self.tokens, rows, self.pad_id, self.pad_to_multiple))
        part["labels"] = self.task.batch_labels(self, rows, part, key)
        part["rows"] = torch.tensor(rows)  # row numbers within the split
        if self.features is not None:
            part["features"] = self.features[rows]
        if self.text_features is not None:
            part["text_features"] = self.text_features[rows]
        return part

    def __getitems__(self, rows: list[int]) -> dict:
        return {"parts": [self.batch(rows)]}

    @property
    def lengths(self) -> list[int]:
        return self.tokens.lengths.tolist()


@dataclass
class TaskData:
    """A fitted task and its splits (train, val, and test where the task declares one)."""

    task: Task
    splits: dict[str, TaskDataset]
    files: dict[str, str]  # split -> the file its rows came from
    skipped: int = 0  # bad rows left out with data.on_bad_row=skip

    def summary(self) -> dict[str, dict]:
        """Per split: its file with its size and sha256 (mtl/data/fingerprint.py), row count,
        and (several label columns) missing labels per column (for metrics.json, model cards
        and the checks of evaluate and resume)."""
        out = {}
        for split, dataset in self.splits.items():
            file = self.files[split]
            out[split] = {"file": file, "rows": len(dataset), **file_fingerprint(file)}
            if self.task.multi:
                missing = self.task.missing(dataset.targets).sum(0).tolist()
                out[split]["missing_labels"] = dict(zip(self.task.columns, missing, strict=True))
        return out


def load_tasks(
    specs: dict[str, TaskSpec],
    tokenizer: Tokenizer,
    cfg: DataConfig,
    seed: int,
    text_prefix: str | None = None,
) -> dict[str, TaskData]:
    """Every task's data, in the order of `specs`."""
    return {name: load_task(name, spec, tokenizer, cfg, seed, text_prefix=text_prefix)
            for name, spec in specs.items()}  # fmt: skip


def load_task(
    name: str,
    spec: TaskSpec,
    tokenizer: Tokenizer,
    cfg: DataConfig,
    seed: int,
    fitted: Task | None = None,
    splits: Collection[str] | None = None,
    text_prefix: str | None = None,
) -> TaskData:
    """Read and split, keep `train_fraction` of the training rows, fit, encode, tokenize.

    With `fitted` (a task read back from a checkpoint) nothing is fitted: its classes and
    scale apply, so a file is encoded exactly as in training. `splits` limits the result.
    `text_prefix` (encoder.text_prefix) goes before every text when it is tokenized.
    """
    examples, skipped = _read_splits(name, spec, cfg.on_bad_row)
    if fitted is None and "val" not in examples:
        raise DataError(f"task.{name}: no validation split (add files.val or a split)")
    if "train" in examples and cfg.overfit_rows:  # the sanity check: memorize a few rows
        rows = range(min(cfg.overfit_rows, len(examples["train"])))
        examples["train"] = examples["train"].subset(list(rows))
        examples["val"] = examples["train"]
    elif "train" in examples and spec.train_fraction < 1:
        train = examples["train"]
        keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        examples["train"] = train.subset(
            sorted(keep[: max(1, round(spec.train_fraction * len(train)))].tolist())
        )
    task = fitted or kind_named(spec.type).fit(name, spec, examples["train"].labels, tokenizer)
    if fitted is None and spec.features:  # standardized with the training rows' statistics
        task = dataclasses.replace(
            task, text_features=TextFeatures.fit(spec.features, examples["train"].texts)
        )
    for split in splits or ():
        if split not in examples:
            raise DataError(f"task.{name}: no {split} split (it has {', '.join(examples)})")
    datasets = {}
    for split in splits or examples:
        result = ReadResult(examples[split])
        _drop_wordless(tokenizer, spec, result, cfg.on_bad_row)
        encoded = _encode(task, result, cfg.on_bad_row)
        tokens = _tokenize(name, split, task, tokenizer, result.examples, cfg, text_prefix)
        good = _usable(task, tokens, result, cfg.on_bad_row)
        if good is not None:  # rows that tokenized to nothing the task can use: left out
            encoded = [encoded[i] for i in good]
            result.examples = result.examples.subset(good)
            tokens = _tokenize(name, split, task, tokenizer, result.examples, cfg, text_prefix)
        ex, skipped = result.examples, skipped + result.skipped
        _report_skips(name, result, f"{split} split")
        needed = {"train": 1, "val": 2}.get(split, 1)
        if len(ex) < needed:
            raise DataError(
                f"task.{name}: the {split} split has {len(ex)} rows (at least {needed} needed; "
                "were rows skipped as bad?)"
            )
        targets = task.targets(encoded, tokens)
        datasets[split] = TaskDataset(
            task, tokens, targets, pad_id(tokenizer), seed, cfg.pad_to_multiple
        )
        if task.text_features is not None:
            datasets[split].text_features = task.text_features(ex.texts)
    files = {split: str(examples[split].path) for split in datasets}
    return TaskData(task, datasets, files, skipped)


def task_tokenizer(tokenizer: Tokenizer, spec: TaskSpec) -> Tokenizer:
    """The tokenizer, truncating at the task's own max_length where it has one."""
    if spec.max_length is None:
        return tokenizer
    own = Tokenizer.from_str(tokenizer.to_str())
    own.enable_truncation(spec.max_length)
    return own


def declared_splits(spec: TaskSpec) -> list[str]:
    """The splits a task's spec gives it: its files, or train, val (and test) by the rule."""
    if spec.files:
        return list(spec.files)
    has_test = spec.split.test_fraction > 0 or spec.split.folds > 0  # a fold is a test split
    return ["train", "val"] + (["test"] if has_test else [])


def _read_splits(name: str, spec: TaskSpec, on_bad_row: str) -> tuple[dict[str, Examples], int]:
    """Each split's checked rows (one file per split, or one file cut by the split rule)."""
    if spec.files:
        examples, skipped = {}, 0
        for split in sorted(spec.files, key=lambda s: s != "train"):  # train first
            result = read_examples(Path(spec.files[split]), name, spec, on_bad_row=on_bad_row)
            _report_skips(name, result, f"{split} split")
            examples[split], skipped = result.examples, skipped + result.skipped
        return examples, skipped
    split = spec.split
    result = read_examples(
        Path(spec.file), name, spec, group_column=split.group_column, on_bad_row=on_bad_row
    )  # type: ignore[arg-type]
    _report_skips(name, result, "file")
    groups = result.examples.groups
    units = (f" in {len(set(groups))} group(s) of split.group_column {split.group_column!r}"
             if groups is not None else "")  # fmt: skip
    units_count = len(set(groups)) if groups is not None else len(result.examples)
    if split.folds > units_count:
        # found at fold 0 (every fold deals all K), not after the folds that could train
        raise DataError(
            f"task.{name}: {split.folds} folds (cv.folds) need as many groups: {spec.file} has "
            f"{len(result.examples)} rows{units}"
        )
    rows = split_indices(len(result.examples), groups, split)
    empty = [s for s in declared_splits(spec) if s not in rows]
    if empty:
        raise DataError(
            f"task.{name}: the {empty[0]} split is empty: {spec.file} has "
            f"{len(result.examples)} rows{units}, too few to deal to "
            f"{', '.join(declared_splits(spec))}"
        )
    return {s: result.examples.subset(idx) for s, idx in rows.items()}, result.skipped


def _drop_wordless(
    tokenizer: Tokenizer, spec: TaskSpec, result: ReadResult, on_bad_row: str
) -> None:
    """A text (or pair text) with no word piece after normalization is a bad row: it would
    train on the special tokens alone (`result.examples` is narrowed to the good rows)."""
    ex = result.examples
    columns = {spec.text_column: ex.texts, spec.text_pair_column: ex.pairs}
    good = []
    for i, line in enumerate(ex.lines):
        empty = [c for c, texts in columns.items()
                 if texts is not None and not has_word_piece(tokenizer, texts[i])]  # fmt: skip
        if not empty:
            good.append(i)
            continue
        reason = f"{ex.path}:{line}: column {empty[0]!r}: {NO_WORD_PIECE}"
        if not result.skip(reason, on_bad_row):
            raise DataError(reason)
    if len(good) < len(ex):
        result.examples = ex.subset(good)


def _encode(task: Task, result: ReadResult, on_bad_row: str) -> list:
    """The split's encoded labels; a label the fitted task cannot use is a bad row (kept out
    of `result.examples`, which is narrowed to the good rows)."""
    ex = result.examples
    targets, good = [], []
    for i, label in enumerate(ex.labels):
        try:
            targets.append(task.encode(label))
            good.append(i)
        except ValueError as e:
            columns = ", ".join(map(repr, task.columns))
            reason = f"{ex.path}:{ex.lines[i]}: column{'s' * task.multi} {columns}: {e}"
            if not result.skip(reason, on_bad_row):
                raise DataError(reason) from None
    if len(good) < len(ex):
        result.examples = ex.subset(good)
    return targets


def _tokenize(
    name: str, split: str, task: Task, tokenizer: Tokenizer, ex: Examples, cfg: DataConfig,
    prefix: str | None,
) -> TokenizedTexts:  # fmt: skip
    tokens, hit = tokenize_cached(
        task_tokenizer(tokenizer, task.spec), ex.texts, ex.pairs,
        Path(cfg.cache_dir) if cfg.cache_dir else None, words=task.tokenize_words, prefix=prefix,
    )  # fmt: skip
    log.info("%s/%s: %d rows, tokens %s", name, split, len(ex),
             "from cache" if hit else "computed")  # fmt: skip
    return tokens


def _usable(task: Task, tokens: TokenizedTexts, result: ReadResult, on_bad_row: str):
    """The indices of the rows the task can use once tokenized, or None if that is all of
    them; the others are bad rows (stop, or skip and count)."""
    bad = task.unusable_rows(tokens)
    if not bad:
        return None
    ex = result.examples
    for i, reason in bad.items():
        message = f"{ex.path}:{ex.lines[i]}: column {task.spec.text_column!r}: {reason}"
        if not result.skip(message, on_bad_row):
            raise DataError(message)
    return [i for i in range(len(ex)) if i not in bad]


def _report_skips(name: str, result: ReadResult, where: str) -> None:
    if result.skipped:
        log.warning("task %s: skipped %d bad rows of its %s (first: %s)", name, result.skipped,
                    where, result.first_skipped)  # fmt: skip
