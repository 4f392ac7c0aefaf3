"""Token tagging: a tag per word (named entities, chunks, ...), from CoNLL-style files."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from mtl.errors import ConfigError, DataError
from mtl.heads import TokenHead
from mtl.tasks.base import Task, quoted
from mtl.tasks.metrics import SpanF1
from mtl.tasks.registry import register_kind
from mtl.tasks.spec import Label, LabelledSpec

if TYPE_CHECKING:
    from mtl.data.cache import TokenizedTexts

log = logging.getLogger(__name__)
IGNORE = -100  # a word piece without a tag: not a word's first piece, special, or padding


@dataclass
class TaggingSpec(LabelledSpec):
    labels: list[str] | None = None  # the tag set as in the files, in its order

    def check(self, name: str) -> None:
        super().check(name)
        if self.label_columns is not None:
            raise ConfigError(
                f"task.{name}.label_columns: a tagging task reads its tags from one column "
                "(label_column)"
            )


@register_kind("tagging", TaggingSpec)
@dataclass(frozen=True, eq=False)
class TaggingTask(Task):
    """Each word's tag is predicted on its first word piece (the others, and special tokens,
    are ignored). Files: CoNLL style (`format: conll`), a token and its tag a line (the tag is
    the last field), a blank line between sentences. Metrics: span-level F1 (seqeval's
    definition: a BIO entity counts only with its exact type and extent) and token accuracy.
    Score: span F1."""

    spec: TaggingSpec
    labels: tuple[str, ...] = ()  # the tag set
    level: ClassVar[str] = "token"
    tokenize_words: ClassVar[bool] = True

    @staticmethod
    def parse_label(spec: TaggingSpec, raw: str) -> tuple[str, ...]:
        tags = tuple(raw.split(" "))
        unknown = [t for t in tags if spec.labels and t not in spec.labels]
        if unknown:
            raise ValueError(f"tag {unknown[0]!r} is not in the tag set {spec.labels}")
        return tags

    @classmethod
    def fit(
        cls, name: str, spec: TaggingSpec, labels: list[Label], tokenizer: Tokenizer | None = None
    ) -> TaggingTask:
        tags = tuple(spec.labels or dict.fromkeys(t for row in labels for t in row))
        if len(tags) < 2:
            raise DataError(f"task.{name}: the training sentences hold {len(tags)} tag(s)")
        return cls(name, spec, labels=tags)

    @classmethod
    def from_state(cls, name: str, spec: TaggingSpec, state: dict) -> TaggingTask:
        return cls(name, spec, labels=tuple(state["labels"]))

    def state(self) -> dict:
        return {**super().state(), "labels": list(self.labels)}

    def encode(self, label: Label) -> list[int]:
        """The tag id of each word (aligned to word pieces when the text is tokenized)."""
        unknown = [t for t in label if t not in self.labels]  # type: ignore[union-attr]
        if unknown:
            raise ValueError(
                f"tag {unknown[0]!r} is not in the tag set {list(self.labels)} learned from the "
                f"training sentences (list every tag in task.{self.name}.labels)"
            )
        return [self.labels.index(t) for t in label]  # type: ignore[union-attr]

    def targets(self, encoded: list, tokens: TokenizedTexts) -> Tensor:
        """(N_tokens,) flat like the token ids: each word's tag on its first piece, IGNORE on
        the other pieces and special tokens. Words cut off by truncation lose their tags (and
        are counted in a warning)."""
        first = torch.ones_like(tokens.words, dtype=torch.bool)
        first[1:] = tokens.words[1:] != tokens.words[:-1]
        first &= tokens.words >= 0
        targets = torch.full(tokens.ids.shape, IGNORE, dtype=torch.long)
        cut = 0
        for i, tags in enumerate(encoded):
            lo, hi = int(tokens.offsets[i]), int(tokens.offsets[i + 1])
            words = tokens.words[lo:hi][first[lo:hi]].long()  # the word of each first piece
            targets[lo:hi][first[lo:hi]] = torch.tensor(tags, dtype=torch.long)[words]
            cut += len(tags) - len(words)
        if cut:
            log.warning("task %s: %d words cut off at max_length have no tag to train on",
                        self.name, cut)  # fmt: skip
        return targets

    def batch_labels(self, dataset, rows: list[int], part: dict, key: str) -> Tensor:
        """(B, T): each row's word-piece tags, padded with IGNORE."""
        labels = torch.full(part["input_ids"].shape, IGNORE, dtype=torch.long)
        for b, i in enumerate(rows):
            lo, hi = dataset.tokens.bounds[i], dataset.tokens.bounds[i + 1]
            labels[b, : hi - lo] = dataset.targets[lo:hi]
        return labels

    def head(self, encoder) -> nn.Module:
        head = self.spec.head
        return TokenHead(encoder.hidden_size, self.num_outputs, head.hidden, head.dropout)

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.long

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(output.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

    def predict(self, output: Tensor) -> Tensor:
        """(B, T) tag ids."""
        return output.argmax(-1)

    def metrics(self) -> MetricCollection:
        return MetricCollection({
            "f1": SpanF1(self.labels, IGNORE),
            "accuracy": MulticlassAccuracy(len(self.labels), average="micro", ignore_index=IGNORE),
        })  # fmt: skip

    def score(self, values: dict[str, float]) -> float:
        return values["f1"]

    def describe_output(self) -> str:
        return f"a tag per word: {quoted(self.labels)}"
