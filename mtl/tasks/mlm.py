"""Masked language modelling: BERT's pretraining objective on a task's own texts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from mtl.errors import DataError, require
from mtl.heads import MaskedLMHead
from mtl.tasks.base import Task
from mtl.tasks.registry import register_kind
from mtl.tasks.spec import Label, TaskSpec
from mtl.tokenizer import SpecialTokens

if TYPE_CHECKING:
    from mtl.data.cache import TokenizedTexts

IGNORE = -100  # a position that was not chosen: no target


@dataclass
class MaskedLMSpec(TaskSpec):
    mask_probability: float = 0.15  # the share of word pieces chosen for prediction

    def check(self, name: str) -> None:
        super().check(name)
        p = self.mask_probability
        require(f"task.{name}.mask_probability", p, 0 < p < 1, "in (0, 1)")


@register_kind("mlm", MaskedLMSpec)
@dataclass(frozen=True, eq=False)
class MaskedLMTask(Task):
    """BERT's masked LM (Devlin et al. 2019): `mask_probability` (15%) of each text's word
    pieces, never special tokens or padding and at least one per text, are chosen; of those 80%
    become the tokenizer's mask token ([MASK], <mask>), 10% a random piece and 10% stay as they
    are, and the head predicts the original piece at each chosen position (over the encoder's
    vocabulary, which may have more rows than the tokenizer has pieces). The choice is drawn
    per batch from (seed, step, task, row): a resumed run masks exactly as the uninterrupted
    one would have, and each validation masks the same positions.

    Continued pretraining on in-domain text, alone or beside the real tasks, is the classic use
    (Gururangan et al. 2020). Its score weight defaults to 0: an auxiliary task that shapes the
    encoder without deciding which checkpoint is best. Metrics: loss (cross-entropy at the
    chosen positions) and accuracy. Score: accuracy."""

    spec: MaskedLMSpec
    mask_id: int = 0
    vocab_size: int = 0  # the tokenizer's pieces: random replacements are drawn from them
    special_ids: tuple[int, ...] = ()  # every special token of the tokenizer: never chosen
    level: ClassVar[str] = "token"
    default_score_weight: ClassVar[float] = 0.0

    @classmethod
    def fit(cls, name: str, spec: MaskedLMSpec, labels: list[Label], tokenizer: Tokenizer) -> Task:
        special = SpecialTokens.of(tokenizer)
        if special.mask is None:
            raise DataError(
                f"task.{name}: the tokenizer has no mask token (a special token named [MASK] or "
                "<mask>) to mask with"
            )
        # the unknown piece is maskable, as in BERT: a word the vocabulary lacks is still a word
        unmaskable = tuple(i for i in special.ids if special.unk is None or i != special.unk.id)
        return cls(name, spec, special.mask.id, tokenizer.get_vocab_size(), unmaskable)

    @classmethod
    def from_state(cls, name: str, spec: MaskedLMSpec, state: dict) -> MaskedLMTask:
        return cls(name, spec, state["mask_id"], state["vocab_size"], tuple(state["special_ids"]))

    def state(self) -> dict:
        return {
            **super().state(),
            "mask_id": self.mask_id,
            "vocab_size": self.vocab_size,
            "special_ids": list(self.special_ids),
        }

    def encode(self, label: Label) -> int:
        return 0  # no labels: the targets are drawn per batch

    def unusable_rows(self, tokens: TokenizedTexts) -> dict[int, str]:
        maskable = ~torch.isin(tokens.ids, torch.tensor(self.special_ids, dtype=tokens.ids.dtype))
        row = torch.repeat_interleave(torch.arange(len(tokens)), tokens.lengths)
        count = torch.zeros(len(tokens)).index_add_(0, row, maskable.float())
        reason = "no word piece to mask (the text holds only special tokens)"
        return {int(i): reason for i in (count == 0).nonzero().flatten()}

    def batch_labels(self, dataset, rows: list[int], part: dict, key: str) -> Tensor:
        """(B, T) the original piece at each chosen position, else IGNORE; masks the chosen
        positions of part["input_ids"] in place."""
        ids = part["input_ids"]
        labels = torch.full_like(ids, IGNORE)
        maskable = part["attention_mask"].bool() & ~torch.isin(ids, torch.tensor(self.special_ids))
        for b, row in enumerate(rows):
            g = torch.Generator().manual_seed(_row_seed(dataset.seed, key, self.name, row))
            positions = maskable[b].nonzero().squeeze(1)  # never empty: see unusable_rows
            chosen = positions[torch.rand(len(positions), generator=g) < self.spec.mask_probability]
            if len(chosen) == 0:
                chosen = positions[torch.randint(len(positions), (1,), generator=g)]
            action = torch.rand(len(chosen), generator=g)
            random_ids = torch.randint(self.vocab_size, (len(chosen),), generator=g)
            original = ids[b, chosen]
            labels[b, chosen] = original
            masked = torch.where(action < 0.9, random_ids, original)
            ids[b, chosen] = torch.where(action < 0.8, self.mask_id, masked)
        return labels

    def head(self, encoder) -> nn.Module:
        return MaskedLMHead(encoder)

    @property
    def num_outputs(self) -> int:
        return self.vocab_size

    @property
    def target_dtype(self) -> torch.dtype:
        return torch.long

    def loss(self, output: Tensor, targets: Tensor) -> Tensor:
        """Mean cross-entropy over the batch's chosen positions; output is (M, V)."""
        chosen = targets[targets != IGNORE]  # (M,), in the order the head decoded them
        if len(chosen) == 0:
            return output.sum() * 0.0
        return F.cross_entropy(output.float(), chosen)

    def predict(self, output: Tensor) -> Tensor:
        """(M,) the most likely piece at each chosen position."""
        return output.argmax(-1)

    def metrics(self) -> MetricCollection:
        return MetricCollection({"loss": MeanMetric(), "accuracy": MeanMetric()})

    def update_metrics(self, metrics: MetricCollection, output: Tensor, targets: Tensor) -> None:
        chosen = targets[targets != IGNORE]
        if len(chosen):
            metrics["loss"].update(F.cross_entropy(output.float(), chosen, reduction="none"))
            metrics["accuracy"].update((self.predict(output) == chosen).float())

    def score(self, values: dict[str, float]) -> float:
        return values["accuracy"]

    def describe_output(self) -> str:
        return "masked word pieces (trains the encoder; not predicted)"


def _row_seed(seed: int, key: str, task: str, row: int) -> int:
    """A 63-bit seed for one row's masking, from the run's seed, the batch's key and the row."""
    digest = hashlib.blake2b(f"{seed}:{key}:{task}:{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
