"""Text statistics as head inputs (`features:` in a task spec).

Readability formulas (Flesch, LIX, the Wiener Sachtextformel for German) predict difficulty
from a few surface counts; a sentence vector carries them only weakly. With `features`, a
task's head sees them beside the pooled vector: each statistic is computed from the text,
standardized with the training split's mean and sd (kept in the task's state, so predict and
export need no training data), and concatenated: (B, C) + (B, F) -> (B, C + F).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

WORD = re.compile(r"\w+")
VOWEL_GROUP = re.compile(r"[aeiouyäöü]+", re.IGNORECASE)  # German and English vowels
PUNCTUATION = re.compile(r"[^\w\s]")


def _words(text: str) -> list[str]:
    return WORD.findall(text)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _syllables(word: str) -> int:
    """Vowel groups: a common estimate of syllables in German and English words."""
    return max(1, len(VOWEL_GROUP.findall(word)))


STATISTICS: dict[str, Callable[[str], float]] = {
    "chars": lambda t: math.log1p(len(t)),  # log characters
    "words": lambda t: math.log1p(len(_words(t))),  # log words
    "word_length": lambda t: _mean([len(w) for w in _words(t)]),  # letters per word
    "syllables": lambda t: _mean([_syllables(w) for w in _words(t)]),  # per word
    "long_words": lambda t: _mean([len(w) > 6 for w in _words(t)]),  # LIX: > 6 letters
    "polysyllables": lambda t: _mean([_syllables(w) >= 3 for w in _words(t)]),  # Sachtextformel
    "punctuation": lambda t: float(len(PUNCTUATION.findall(t))),  # marks per text
    "commas": lambda t: float(t.count(",")),  # clauses, roughly
}


def raw_statistics(names: list[str], texts: list[str]) -> Tensor:
    """(N, F): the named statistics of each text, unscaled."""
    return torch.tensor([[STATISTICS[n](t) for n in names] for t in texts], dtype=torch.float64)


@dataclass(frozen=True)
class TextFeatures:
    """Named text statistics and their training mean and sd."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, names: list[str], texts: list[str]) -> TextFeatures:
        x = raw_statistics(names, texts)
        std = x.std(0) if len(texts) > 1 else torch.zeros(len(names), dtype=torch.float64)
        std = torch.where(std > 0, std, torch.ones_like(std))  # a constant statistic: centred
        return cls(tuple(names), tuple(x.mean(0).tolist()), tuple(std.tolist()))

    def __call__(self, texts: list[str]) -> Tensor:
        """(N, F) standardized statistics, float32."""
        x = raw_statistics(list(self.names), texts)
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        return ((x - mean) / std).float()

    def state(self) -> dict:
        return {"names": list(self.names), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_state(cls, state: dict) -> TextFeatures:
        return cls(tuple(state["names"]), tuple(state["mean"]), tuple(state["std"]))
