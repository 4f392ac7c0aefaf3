"""Tasks: their specs (validated structured configs) and their kinds (labels, loss, metrics,
score, predictions). A task is declared in `conf/task/<name>.yaml` under its own name:

    complexity:
      type: regression
      files: {train: ..., val: ...}

Kinds: regression, classification, multilabel, tagging (a tag per word) and mlm (BERT's masked
language model on the task's texts), one file each, and plug-in kinds (`registry`);
`base.Task` says what each decides.
"""

from __future__ import annotations

from mtl.tasks.base import Task
from mtl.tasks.classification import ClassificationSpec, ClassificationTask
from mtl.tasks.metrics import ColumnMetric, MappedRMSE, SpanF1, mapped_rmse
from mtl.tasks.mlm import MaskedLMSpec, MaskedLMTask
from mtl.tasks.multilabel import MultilabelSpec, MultilabelTask
from mtl.tasks.parsing import parse_task_specs, stored_tasks, task_from_state
from mtl.tasks.registry import all_kinds, kind_named, register_kind
from mtl.tasks.regression import RegressionLoss, RegressionSpec, RegressionTask
from mtl.tasks.spec import (
    FLOAT32_MAX,
    HeadSpec,
    Label,
    LabelledSpec,
    SplitSpec,
    TaskSpec,
    spec_dict,
)
from mtl.tasks.tagging import TaggingSpec, TaggingTask
from mtl.tasks.text_stats import STATISTICS, TextFeatures

__all__ = [
    "FLOAT32_MAX", "STATISTICS", "ClassificationSpec", "ClassificationTask", "ColumnMetric",
    "HeadSpec", "Label", "LabelledSpec", "MappedRMSE", "MaskedLMSpec", "MaskedLMTask",
    "MultilabelSpec", "MultilabelTask", "RegressionLoss", "RegressionSpec", "RegressionTask",
    "SpanF1", "SplitSpec", "TaggingSpec", "TaggingTask", "Task", "TaskSpec",
    "TextFeatures", "all_kinds", "kind_named", "mapped_rmse", "parse_task_specs",
    "register_kind", "spec_dict", "stored_tasks", "task_from_state",
]  # fmt: skip
