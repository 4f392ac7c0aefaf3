"""Tokenize a split once, in batch, and cache the token ids on disk.

The cache key is a SHA-256 of the texts themselves (so of the file content and columns), the
tokenizer's full serialization, the maximum length, the text prefix and whether the texts
came as words; a changed file or tokenizer misses.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import Tensor

from mtl.tensor_files import atomic_save_safetensors
from mtl.tokenizer import encode_batch, prefix_words

log = logging.getLogger(__name__)


@dataclass
class TokenizedTexts:
    """Ragged token ids stored flat: row i is ids[offsets[i]:offsets[i + 1]]."""

    ids: Tensor  # (N_tokens,) int32
    type_ids: Tensor  # (N_tokens,) uint8
    offsets: Tensor  # (N_rows + 1,) int64
    words: Tensor | None = None  # (N_tokens,) int32: the word of each piece, -1 for special

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @cached_property
    def bounds(self) -> list[int]:
        """The offsets as Python ints (read once, not per row)."""
        return self.offsets.tolist()

    def row(self, i: int) -> tuple[Tensor, Tensor]:
        lo, hi = self.bounds[i], self.bounds[i + 1]
        return self.ids[lo:hi], self.type_ids[lo:hi]

    def to_dict(self) -> dict[str, Tensor]:
        out = {"ids": self.ids, "type_ids": self.type_ids, "offsets": self.offsets}
        return out if self.words is None else {**out, "words": self.words}


CACHE_FORMAT = 1  # bump when the stored layout changes


def cache_key(
    tokenizer: Tokenizer,
    texts: list[str],
    pairs: list[str] | None,
    words: bool = False,
    prefix: str | None = None,
) -> str:
    h = hashlib.sha256(f"mtl-tokens-v{CACHE_FORMAT}{'-words' * words}".encode())
    if prefix:
        h.update(f"prefix:{len(prefix)}:{prefix}".encode())
    h.update(tokenizer.to_str().encode())
    h.update(str(tokenizer.truncation).encode())
    for part in (texts, pairs or []):
        h.update(len(part).to_bytes(8, "little"))
        for text in part:
            data = text.encode()
            h.update(len(data).to_bytes(8, "little") + data)  # length-prefixed: no ambiguity
    return h.hexdigest()[:32]


def tokenize(
    tokenizer: Tokenizer,
    texts: list[str],
    pairs: list[str] | None,
    words: bool = False,
    prefix: str | None = None,
) -> TokenizedTexts:
    """Token ids of each text, `prefix` (encoder.text_prefix) first; with `words`, the texts are
    space-separated words (tagging) and each piece's word is kept (-1: a special token's or
    the prefix's)."""
    encodings = encode_batch(tokenizer, texts, pairs, words, prefix)
    lengths = torch.tensor([0] + [len(e.ids) for e in encodings], dtype=torch.int64)
    flat = lambda key, dtype: torch.tensor(  # noqa: E731
        [t for e in encodings for t in getattr(e, key)], dtype=dtype
    )
    lead = len(prefix_words(prefix))
    word_ids = [-1 if w is None or w < lead else w - lead for e in encodings for w in e.word_ids]
    return TokenizedTexts(
        ids=flat("ids", torch.int32),
        type_ids=flat("type_ids", torch.uint8),
        offsets=lengths.cumsum(0),
        words=torch.tensor(word_ids, dtype=torch.int32) if words else None,
    )


def tokenize_cached(
    tokenizer: Tokenizer,
    texts: list[str],
    pairs: list[str] | None,
    cache_dir: Path | None,
    words: bool = False,
    prefix: str | None = None,
) -> tuple[TokenizedTexts, bool]:
    """Token ids for the texts (see `tokenize`), and whether they came from the cache."""
    if cache_dir is None:
        return tokenize(tokenizer, texts, pairs, words, prefix), False
    file = Path(cache_dir) / f"{cache_key(tokenizer, texts, pairs, words, prefix)}.safetensors"
    if file.is_file():
        try:
            tokens = TokenizedTexts(**load_file(file))
            if len(tokens) == len(texts):
                return tokens, True
            log.warning(
                "ignoring token cache %s: %d rows for %d texts", file, len(tokens), len(texts)
            )
        except Exception as e:  # a damaged cache entry is rebuilt, never trusted
            log.warning("ignoring unreadable token cache %s (%s)", file, e)
    tokens = tokenize(tokenizer, texts, pairs, words, prefix)
    atomic_save_safetensors(tokens.to_dict(), file)
    return tokens, False
