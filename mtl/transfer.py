"""Ways of reusing a pretrained encoder (`conf/transfer/`), beyond plain fine-tuning.

- feature extraction: the encoder is frozen, so every text's sentence vector is computed once
  (eval mode, no dropout) and the heads train on those cached vectors: a step costs a head's
  forward and backward instead of the encoder's.
- linear probing, then fine-tuning (LP-FT; Kumar et al. 2022, "Fine-Tuning can Distort
  Pretrained Features and Underperform Out-of-Distribution"): the heads train alone on the
  frozen encoder for `probe_steps` steps, then the encoder joins, so its first gradients come
  through fitted heads instead of random ones.
- gradual unfreezing (ULMFiT; Howard & Ruder 2018, "Universal Language Model Fine-tuning for
  Text Classification"): the heads and the top layer train first, and one more layer (then
  the embeddings) joins every `unfreeze_every` steps.
- partial freezing, layer-wise learning-rate decay and training from scratch are encoder and
  optimizer settings (`encoder.freeze_*`, `optimizer.layer_decay`, `encoder=scratch`).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from enum import Enum

import pytorch_lightning as pl
import torch

from mtl.data.batching import collate, sorted_batches
from mtl.data.loading import TaskData
from mtl.encoder import Encoder
from mtl.errors import ConfigError, require

log = logging.getLogger(__name__)


class TransferMode(str, Enum):
    finetune = "finetune"
    feature_extraction = "feature_extraction"
    partial = "partial"
    probe_then_finetune = "probe_then_finetune"
    gradual_unfreezing = "gradual_unfreezing"
    layer_decay = "layer_decay"
    from_scratch = "from_scratch"


@dataclass
class TransferConfig:
    mode: TransferMode = TransferMode.finetune  # the name reports group runs by
    features: bool = False  # frozen encoder: train the heads on cached sentence vectors
    probe_steps: int = 0  # the heads train alone on the frozen encoder for the first N steps
    unfreeze_every: int = 0  # gradual unfreezing: steps between unfreezing layers; 0 = off

    def check(self) -> None:
        """The ranges of these settings; errors name the `transfer.` key."""
        for key in ("probe_steps", "unfreeze_every"):
            require(f"transfer.{key}", getattr(self, key), getattr(self, key) >= 0, ">= 0")


@torch.inference_mode()
def cache_features(
    encoder: Encoder,
    data: dict[str, TaskData],
    precision: str,
    device: torch.device,
    batch_size: int,
) -> None:
    """Compute every split's sentence vectors once and attach them to its datasets. Token-level
    tasks need every token's state, which is not cached: they are refused."""
    token_level = [n for n, d in data.items() if d.task.level == "token"]
    if token_level:
        raise ConfigError(
            f"transfer=feature_extraction caches sentence vectors, but task {token_level[0]!r} "
            f"({data[token_level[0]].task.kind}) needs every token's state; freeze the "
            "encoder without the cache instead: transfer=finetune encoder.freeze_embeddings=true "
            "encoder.freeze_layers=6 (its number of layers)"
        )
    encoder.requires_grad_(False)
    was_training = encoder.training
    encoder.eval().to(device)
    bf16 = precision.startswith("bf16")
    for name, task_data in data.items():
        for split, dataset in task_data.splits.items():
            features = torch.empty(len(dataset), encoder.hidden_size)
            for rows in sorted_batches(dataset.lengths, batch_size):
                part = collate(dataset.tokens, rows, dataset.pad_id)
                batch = {k: v.to(device) for k, v in part.items()}
                with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
                    pooled = encoder(
                        batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
                    ).pooled
                features[rows] = pooled.float().cpu()
            dataset.features = features
            log.info("%s/%s: %d sentence vectors cached", name, split, len(dataset))
    encoder.train(was_training).cpu()


class EncoderUnfreezing(pl.Callback):
    """Which encoder groups train at step s: none while s < probe_steps (the heads alone), then
    the top 1 + (s − probe_steps) // every of them, the embeddings last, or all of them when
    every = 0. Groups that `encoder.freeze_*` froze stay frozen. Derived from the step alone,
    so a resumed run agrees."""

    def __init__(self, probe_steps: int, every: int) -> None:
        self.probe_steps = probe_steps
        self.every = every
        self._unfrozen = -1  # groups trainable now; -1 before the first step
        self._trainable: set[int] = set()  # ids of the parameters the optimizer updates

    def unfrozen(self, step: int, groups: int) -> int:
        if step < self.probe_steps:
            return 0
        if not self.every:
            return groups
        return min(groups, 1 + (step - self.probe_steps) // self.every)

    def on_train_start(self, trainer, pl_module) -> None:
        self._trainable = {id(p) for p in pl_module.encoder.parameters() if p.requires_grad}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        groups = pl_module.encoder.layer_groups()  # [embeddings, layer 0, ..., layer L-1]
        unfrozen = self.unfrozen(trainer.global_step, len(groups))
        if unfrozen == self._unfrozen:
            return
        for depth, params in enumerate(reversed(groups)):  # depth 0: the top layer
            for p in params:
                p.requires_grad_(depth < unfrozen and id(p) in self._trainable)
        if unfrozen == 0:
            log.info("the heads train alone on the frozen encoder until step %d", self.probe_steps)
        elif self._unfrozen >= 0:
            log.info("step %d: the top %d of %d encoder groups train", trainer.global_step,
                     unfrozen, len(groups))  # fmt: skip
        self._unfrozen = unfrozen
