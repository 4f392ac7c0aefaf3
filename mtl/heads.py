"""Task heads: small networks from the encoder's output to a task's outputs.

Every head is called as `head(out, encoder, part)`: `out` is the encoder's BertOutput (the
token states (B, T, C) and the sentence vectors (B, C)), `encoder` the shared encoder (the
masked-LM head reuses its word embeddings) and `part` the task's batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl.encoder import BertOutput, Encoder


class MLPHead(nn.Module):
    """dropout → [Linear → GELU → dropout] → Linear on the sentence vector (with the task's
    text statistics, if it has `features`): a linear probe, or one hidden layer.
    (B, C[ + F]) -> (B, outputs)."""

    def __init__(
        self, in_features: int, out_features: int, hidden: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout)]
            in_features = hidden
        layers.append(nn.Linear(in_features, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, out: BertOutput, encoder: Encoder, part: dict) -> Tensor:
        x = self.net[0](out.pooled)  # dropout on the sentence vector (B, C)
        if "text_features" in part:  # (B, F) standardized text statistics, never dropped
            x = torch.cat([x, part["text_features"].to(x.dtype)], dim=-1)  # (B, C + F)
        return self.net[1:](x)  # (B, out_features)


class TokenHead(MLPHead):
    """The same network on every token's state: (B, T, C) -> (B, T, outputs) (tagging)."""

    def forward(self, out: BertOutput, encoder: Encoder, part: dict) -> Tensor:
        return self.net(out.hidden)


class MaskedLMHead(nn.Module):
    """BERT's masked-LM head (as BertForMaskedLM's `cls.predictions`; RoBERTa's, DistilBERT's
    and DeBERTa's are alike): dense → GELU → LayerNorm, then a decoder tied to the encoder's
    word embeddings (E wide: C, or less where the architecture projects them, as ELECTRA),
    plus a bias. Only the masked positions (labels != -100) are decoded: (M, V) logits, not
    (B, T, V)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        cfg, E = encoder.cfg, encoder.word_embeddings.embedding_dim
        self.dense = nn.Linear(cfg.hidden_size, E)
        self.norm = nn.LayerNorm(E, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        pretrained = encoder.mlm_weights  # cls.predictions.* of the checkpoint, if it had them
        if pretrained:
            self.load_state_dict(pretrained)

    def forward(self, out: BertOutput, encoder: Encoder, part: dict) -> Tensor:
        h = out.hidden[part["labels"] != -100]  # (M, C)
        h = self.norm(F.gelu(self.dense(h)))  # (M, E)
        return h @ encoder.word_embeddings.weight.T + self.bias  # (M, V)
