"""Load a tokenizer with the `tokenizers` library (any vocabulary: BERT's WordPiece, XLM-R's
SentencePiece, ...), know its special tokens by role, encode text in batch, save it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from tokenizers import Encoding, Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.models import WordPiece

from mtl.errors import CheckpointError
from mtl.io import atomic_write, atomic_write_text


def load_tokenizer(path: str | Path, max_length: int) -> Tokenizer:
    """tokenizer.json, or vocab.txt with lowercasing from tokenizer_config.json.

    Any fixed padding a checkpoint ships is switched off and truncation is set to `max_length`
    (see `for_batches`).
    """
    path = Path(path)
    if (path / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    elif (path / "vocab.txt").is_file():
        settings = _tokenizer_config(path)
        lowercase = settings.get("do_lower_case", True)
        tokenizer = BertWordPieceTokenizer(
            str(path / "vocab.txt"),
            lowercase=lowercase,
            strip_accents=settings.get("strip_accents"),
            handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
        )._tokenizer
    else:
        raise CheckpointError(
            f"{path}: no tokenizer.json or vocab.txt found (for a checkpoint with a SentencePiece "
            "model only, such as DeBERTa-v3's spm.model, transformers writes tokenizer.json: "
            f"AutoTokenizer.from_pretrained('{path}').save_pretrained('{path}'))"
        )
    return for_batches(tokenizer, max_length)


def tokenizer_from_json(text: str, max_length: int) -> Tokenizer:
    """A tokenizer from its serialization (as `Tokenizer.to_str()` wrote it)."""
    return for_batches(Tokenizer.from_str(text), max_length)


def for_batches(tokenizer: Tokenizer, max_length: int) -> Tokenizer:
    """No fixed padding (batches are padded dynamically); truncation to `max_length` tokens,
    special tokens included."""
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def _tokenizer_config(path: Path) -> dict:
    file = path / "tokenizer_config.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def save_tokenizer(tokenizer: Tokenizer, path: str | Path, lowercase: bool) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (Hugging Face
    layout) with the tokenizer's special tokens; a WordPiece tokenizer also gets vocab.txt and
    is labelled `BertTokenizer`, any other `PreTrainedTokenizerFast`, which reads tokenizer.json
    as it is (transformers' XLMRobertaTokenizer would rebuild the normalizer its own way)."""
    path = Path(path)
    atomic_write(path / "tokenizer.json", lambda tmp: tokenizer.save(str(tmp)))
    special = SpecialTokens.of(tokenizer)
    names = {f"{role}_token": token.token for role, token in special.roles().items()}
    if isinstance(tokenizer.model, WordPiece):
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        atomic_write_text(path / "vocab.txt", "".join(f"{token}\n" for token, _ in vocab))
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase}
    else:  # <s> and </s> begin and end a text: also its bos and eos
        names |= {f"{end}_token": names[f"{role}_token"] for end, role in
                  (("bos", "cls"), ("eos", "sep")) if f"{role}_token" in names}  # fmt: skip
        config = {"tokenizer_class": "PreTrainedTokenizerFast"}
    config |= names
    if tokenizer.truncation:
        config["model_max_length"] = tokenizer.truncation["max_length"]
    atomic_write_text(path / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    atomic_write_text(path / "special_tokens_map.json", json.dumps(names, indent=2) + "\n")


def is_lowercase(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer's BERT normalizer lowercases (False if it has none)."""
    state = json.loads(tokenizer.to_str()).get("normalizer") or {}
    return bool(state.get("lowercase", False))


class Special(NamedTuple):
    """A special token: its text and its id."""

    token: str
    id: int


ROLE_NAMES = {  # a special token's name, lower case without <>[]|, -> its role
    "cls": "cls", "s": "cls", "bos": "cls", "sep": "sep", "/s": "sep", "eos": "sep",
    "pad": "pad", "mask": "mask", "unk": "unk",
}  # fmt: skip


@dataclass(frozen=True)
class SpecialTokens:
    """A tokenizer's special tokens by role (None where it has none), read from the tokenizer
    alone: its post-processor's template says what begins (cls) and ends (sep) a text, its
    special tokens' names the rest ([PAD] or <pad>, ...), its model the unknown piece."""

    cls: Special | None = None  # begins a text: BERT's [CLS], XLM-R's <s> (its bos)
    sep: Special | None = None  # ends a text: [SEP], </s> (its eos)
    pad: Special | None = None
    mask: Special | None = None
    unk: Special | None = None
    ids: tuple[int, ...] = ()  # every special token's id, in order

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> SpecialTokens:
        found: dict[str, Special] = {}
        ids = {i for i, added in tokenizer.get_added_tokens_decoder().items() if added.special}
        for i in sorted(ids):
            token = tokenizer.id_to_token(i)
            role = ROLE_NAMES.get(token.strip("<>[]|").lower())
            if role and role not in found:
                found[role] = Special(token, i)
        unk = getattr(tokenizer.model, "unk_token", None)  # WordPiece's and BPE's
        if unk is not None and tokenizer.token_to_id(unk) is not None:
            found["unk"] = Special(unk, tokenizer.token_to_id(unk))
        for role, token in _template_ends(tokenizer).items():
            found[role] = token
            ids.add(token.id)
        return cls(**found, ids=tuple(sorted(ids)))

    def roles(self) -> dict[str, Special]:
        """The roles the tokenizer has, by name."""
        return {r: t for r in ("cls", "sep", "pad", "mask", "unk") if (t := getattr(self, r))}


def _template_ends(tokenizer: Tokenizer) -> dict[str, Special]:
    """The special tokens a single text begins (cls) and ends (sep) with, from the
    tokenizer's post-processor (a template, BERT's or RoBERTa's processing, or a sequence of
    processors holding one of those)."""
    processor = tokenizer.post_processor
    top = json.loads(processor.__getstate__()) if processor is not None else {}
    for state in [top, *(top.get("processors") or [])]:
        if "cls" in state and "sep" in state:  # BertProcessing, RobertaProcessing
            return {role: Special(*state[role]) for role in ("cls", "sep")}
        if state.get("type") == "TemplateProcessing":
            return _template_roles(state)
    return {}


def _template_roles(state: dict) -> dict[str, Special]:
    items = state["single"]
    first = next((i for i, item in enumerate(items) if "Sequence" in item), None)
    out: dict[str, Special] = {}
    if first is None:
        return out
    for role, part in (("cls", items[:first]), ("sep", items[first + 1 :][::-1])):
        if part and "SpecialToken" in part[0]:
            named = state["special_tokens"][part[0]["SpecialToken"]["id"]]
            if len(named["ids"]) == 1:
                out[role] = Special(named["tokens"][0], named["ids"][0])
    return out


def pad_id(tokenizer: Tokenizer, source: str = "the tokenizer") -> int:
    """The id of the tokenizer's padding token ([PAD], <pad>); a tokenizer without one is an
    error naming `source`."""
    pad = SpecialTokens.of(tokenizer).pad
    if pad is None:
        raise CheckpointError(
            f"{source} has no padding token (a special token named [PAD] or <pad>) to pad "
            "batches with"
        )
    return pad.id


WORD_CHARACTER = re.compile(r"\w")
NO_WORD_PIECE = (
    "no word piece after the tokenizer's normalization (only zero-width, control or combining "
    "characters?)"
)


def has_word_piece(tokenizer: Tokenizer, text: str) -> bool:
    """Whether `text` keeps anything but white space through the tokenizer's normalizer, which
    drops zero-width and control characters (and, lowercasing BERT's, combining marks): a text
    that keeps nothing gives the encoder its special tokens alone."""
    if WORD_CHARACTER.search(text):  # a letter or digit: kept (the fast path, most texts)
        return True
    normalizer = tokenizer.normalizer
    return bool((normalizer.normalize_str(text) if normalizer else text).strip())


def encode(
    tokenizer: Tokenizer, texts: list[str], pairs: list[str] | None = None
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and token-type ids for each text (or text pair; see `encode_batch`)."""
    encodings = encode_batch(tokenizer, texts, pairs)
    return [e.ids for e in encodings], [e.type_ids for e in encodings]


def encode_batch(
    tokenizer: Tokenizer,
    texts: list[str],
    pairs: list[str] | None = None,
    words: bool = False,
    prefix: str | None = None,
) -> list[Encoding]:
    """Each text's encoding, or text pair's by the tokenizer's own pair template ([CLS] a [SEP]
    b [SEP] for BERT, <s> a </s></s> b </s> for XLM-R); `prefix` (encoder.text_prefix) goes
    before each text, not before a pair's second. With `words` the texts are space-separated
    words, tokenized word by word (each piece knows its word; the prefix's words come first,
    see `prefix_words`)."""
    if words:
        inputs: list = [prefix_words(prefix) + t.split(" ") for t in texts]
    else:
        inputs = [prefix + t for t in texts] if prefix else texts
    if pairs is not None:
        inputs = list(zip(inputs, [p.split(" ") for p in pairs] if words else pairs, strict=True))
    return tokenizer.encode_batch(inputs, is_pretokenized=words)


def prefix_words(prefix: str | None) -> list[str]:
    """The words `encode_batch` puts before each text's words (the prefix split at spaces)."""
    return prefix.split() if prefix else []
