"""Task specs: the validated structured config of one task (`conf/task/<name>.yaml`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import torch
from omegaconf import MISSING, OmegaConf


class TaskType(str, Enum):
    regression = "regression"
    classification = "classification"
    multilabel = "multilabel"
    tagging = "tagging"
    mlm = "mlm"


class Loss(str, Enum):
    mse = "mse"
    huber = "huber"
    l1 = "l1"
    cross_entropy = "cross_entropy"
    bce = "bce"


@dataclass
class SplitSpec:
    """One file split into train/val(/test) by rows, or by groups of rows that stay together."""

    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    group_column: str | None = None  # rows sharing this value land in the same split
    folds: int = 0  # cross-validation: K folds of the groups; the test split is fold `fold`
    fold: int = 0


@dataclass
class HeadSpec:
    hidden: int | None = None  # width of an optional hidden layer (GELU); None = linear head
    dropout: float = 0.1


@dataclass
class TaskSpec:
    type: TaskType = MISSING
    files: dict[str, str] = field(default_factory=dict)  # split (train/val/test) -> path
    file: str | None = None  # or one file plus a split rule
    dataset: str | None = None  # or a registered data set (python -m mtl.data list) ...
    dataset_task: str | None = None  # ... and which of its tasks (default: its first)
    split: SplitSpec = field(default_factory=SplitSpec)
    format: str | None = None  # csv | tsv | jsonl | lines | conll | ...; None: from the suffix
    encoding: str = "utf-8"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    label_columns: list[str] | None = None  # several targets, one output each; empty = missing
    labels: list[str] | None = None  # the classes (tags, labels) as in the file, in their order
    label_delimiter: str = ";"  # multilabel: labels in one cell, e.g. "price;service"
    threshold: float = 0.5  # multilabel: a label is predicted above this probability
    range: list[float] | None = None  # regression: [low, high]; labels outside are bad rows
    train_fraction: float = 1.0  # use this fraction of the training rows (learning curves)
    head: HeadSpec = field(default_factory=HeadSpec)
    loss: Loss | None = None  # regression: mse | huber | l1; the others: their own
    loss_weight: float = 1.0
    score_weight: float | None = None  # weight in val/score; None: 1 (mlm beside labels: 0)
    lr_scale: float = 1.0  # multiplies optimizer.head_lr for this task's head
    encoder_lr_scale: float = 1.0  # multiplies the encoder's rate at steps that train this task
    batch_size: int | None = None  # rows per batch of this task (None: data.batch_size)
    max_length: int | None = None  # tokens per text of this task (None: encoder.max_length)
    patience: int | None = None  # validations without a better score before the task stops
    mapped_rmse: bool = False  # regression: also RMSE after a cubic map to the labels (GermEval)
    mask_probability: float = 0.15  # mlm: the share of word pieces chosen for prediction
    features: list[str] = field(default_factory=list)  # text statistics the head also sees


def spec_dict(spec: TaskSpec) -> dict:
    """A spec as plain JSON-able values (the inverse of `parse_task_specs` for one task)."""
    return OmegaConf.to_container(OmegaConf.structured(spec), enum_to_str=True)  # type: ignore[return-value]


FLOAT32_MAX = torch.finfo(torch.float32).max  # targets are trained in float32
Label = float | str | tuple | list | None  # a parsed label (a tuple with label_columns)
