"""Task specs: the validated structured config of one task (`conf/task/<name>.yaml`).

`TaskSpec` holds the keys every kind has (where the data is, how it is read, the head and the
task's share of training); each kind extends it with its own keys in its own file (e.g.
`RegressionSpec.range`), so a key the kind does not use is an unknown key. `TaskSpec(type=k,
...)` builds kind k's spec. Each spec checks the ranges of the keys it defines (`check`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import MISSING, OmegaConf

from mtl.errors import ConfigError, require
from mtl.tasks.text_stats import STATISTICS


@dataclass
class SplitSpec:
    """One file split into train/val(/test) by rows, or by groups of rows that stay together."""

    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    group_column: str | None = None  # rows sharing this value land in the same split
    folds: int = 0  # cross-validation: K folds of the groups; the test split is fold `fold`
    fold: int = 0

    def check(self, key: str) -> None:
        """The ranges of these settings; errors name `<key>.<setting>`."""
        val, test, folds = self.val_fraction, self.test_fraction, self.folds
        require(f"{key}.val_fraction", val, 0 < val < 1, "in (0, 1)")
        require(f"{key}.test_fraction", test, 0 <= test < 1, "in [0, 1)")
        if val + test >= 1:
            raise ConfigError(
                f"{key}: must be val_fraction + test_fraction < 1, got {val} + {test}"
            )
        require(f"{key}.folds", folds, folds == 0 or folds >= 2, "0 or >= 2")
        require(f"{key}.fold", self.fold, folds == 0 or 0 <= self.fold < folds, "in [0, folds)")
        require(f"{key}.test_fraction", test, folds == 0 or test == 0,
                "0 with folds (a fold is the test)")  # fmt: skip


@dataclass
class HeadSpec:
    hidden: int | None = None  # width of an optional hidden layer (GELU); None = linear head
    dropout: float = 0.1

    def check(self, key: str) -> None:
        """The ranges of these settings; errors name `<key>.<setting>`."""
        require(f"{key}.dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1)")
        require(f"{key}.hidden", self.hidden, (self.hidden or 1) > 0, "> 0 or null")


@dataclass
class TaskSpec:
    """The keys of every task kind."""

    type: str = MISSING  # the kind: regression, classification, ... or a plug-in's name
    files: dict[str, str] = field(default_factory=dict)  # split (train/val/test) -> path
    file: str | None = None  # or one file plus a split rule
    dataset: str | None = None  # or a registered data set (python -m mtl.data list) ...
    dataset_task: str | None = None  # ... and which of its tasks (default: its first)
    split: SplitSpec = field(default_factory=SplitSpec)
    format: str | None = None  # csv | tsv | jsonl | lines | conll | ...; None: from the suffix
    encoding: str = "utf-8"
    text_column: str = "text"
    text_pair_column: str | None = None
    train_fraction: float = 1.0  # use this fraction of the training rows (learning curves)
    head: HeadSpec = field(default_factory=HeadSpec)
    loss_weight: float = 1.0
    score_weight: float | None = None  # weight in val/score; None: 1 (mlm beside labels: 0)
    lr_scale: float = 1.0  # multiplies optimizer.head_lr for this task's head
    encoder_lr_scale: float = 1.0  # multiplies the encoder's rate at steps that train this task
    batch_size: int | None = None  # rows per batch of this task (None: data.batch_size)
    max_length: int | None = None  # tokens per text of this task (None: encoder.max_length)
    patience: int | None = None  # validations without a better score before the task stops
    features: list[str] = field(default_factory=list)  # text statistics the head also sees

    def __new__(cls, *args, **kwargs) -> TaskSpec:
        """`TaskSpec(type="regression", ...)` is the spec of that kind (a RegressionSpec)."""
        kind = kwargs.get("type", args[0] if args else None)
        if cls is TaskSpec and kind is not None:
            from mtl.tasks.registry import kind_named

            cls = kind_named(kind).spec_type
        return super().__new__(cls)

    def check(self, name: str) -> None:
        """The ranges of these keys; errors name `task.<name>.<key>`."""
        key = f"task.{name}"
        if not self.dataset and bool(self.files) == bool(self.file):
            raise ConfigError(
                f"{key}: give either `files` (per split), `file` + `split`, or `dataset`"
            )
        if self.files and "train" not in self.files:
            raise ConfigError(f"{key}.files: needs a 'train' entry, got {list(self.files)}")
        fraction, weight, scale = self.train_fraction, self.score_weight, self.encoder_lr_scale
        require(f"{key}.train_fraction", fraction, 0 < fraction <= 1, "in (0, 1]")
        require(f"{key}.loss_weight", self.loss_weight, self.loss_weight >= 0, ">= 0")
        require(f"{key}.score_weight", weight, (weight or 0) >= 0, ">= 0 or null")
        require(f"{key}.lr_scale", self.lr_scale, self.lr_scale > 0, "> 0")
        require(f"{key}.encoder_lr_scale", scale, scale >= 0, ">= 0")
        require(f"{key}.batch_size", self.batch_size, (self.batch_size or 1) > 0, "> 0 or null")
        require(f"{key}.max_length", self.max_length, (self.max_length or 3) > 2, "> 2 or null")
        require(f"{key}.patience", self.patience, (self.patience or 1) > 0, "> 0 or null")
        self.head.check(f"{key}.head")
        self.split.check(f"{key}.split")
        unknown = [f for f in self.features if f not in STATISTICS]
        if unknown:
            raise ConfigError(
                f"{key}.features: unknown text statistic {unknown[0]!r} (known: "
                f"{', '.join(STATISTICS)})"
            )

    @property
    def label_sources(self) -> list[str]:
        """The columns the labels are read from: none (the texts alone)."""
        return []


@dataclass
class LabelledSpec(TaskSpec):
    """The keys of kinds that read their labels from the rows' columns."""

    label_column: str = "label"
    label_columns: list[str] | None = None  # several targets, one output each; empty = missing

    @property
    def label_sources(self) -> list[str]:
        """The columns the labels are read from."""
        return list(self.label_columns or [self.label_column])


def spec_dict(spec: TaskSpec) -> dict:
    """A spec as plain JSON-able values (the inverse of `parse_task_specs` for one task)."""
    return OmegaConf.to_container(OmegaConf.structured(spec), enum_to_str=True)  # type: ignore[return-value]


FLOAT32_MAX = torch.finfo(torch.float32).max  # targets are trained in float32
Label = float | str | tuple | list | None  # a parsed label (a tuple with label_columns)
