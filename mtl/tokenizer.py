"""Load a BERT WordPiece tokenizer with the `tokenizers` library and encode text in batch."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Encoding, Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer

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
        raise CheckpointError(f"{path}: no tokenizer.json or vocab.txt found")
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
    """Write tokenizer.json, vocab.txt and tokenizer_config.json (Hugging Face layout)."""
    path = Path(path)
    atomic_write(path / "tokenizer.json", lambda tmp: tokenizer.save(str(tmp)))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    atomic_write_text(path / "vocab.txt", "".join(f"{token}\n" for token, _ in vocab))
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": lowercase}
    if tokenizer.truncation:
        config["model_max_length"] = tokenizer.truncation["max_length"]
    atomic_write_text(path / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")


def is_lowercase(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer's BERT normalizer lowercases (False if it has none)."""
    state = json.loads(tokenizer.to_str()).get("normalizer") or {}
    return bool(state.get("lowercase", False))


def pad_id(tokenizer: Tokenizer) -> int:
    """The id of [PAD] (0 in BERT vocabularies)."""
    token = tokenizer.token_to_id("[PAD]")
    return 0 if token is None else token


def encode(
    tokenizer: Tokenizer, texts: list[str], pairs: list[str] | None = None
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids and token-type ids for each text (or text pair: [CLS] a [SEP] b [SEP])."""
    encodings = encode_batch(tokenizer, texts, pairs)
    return [e.ids for e in encodings], [e.type_ids for e in encodings]


def encode_batch(
    tokenizer: Tokenizer, texts: list[str], pairs: list[str] | None = None, words: bool = False
) -> list[Encoding]:
    """Each text's encoding (or text pair's: [CLS] a [SEP] b [SEP]); with `words` the texts are
    space-separated words, tokenized word by word (each piece knows its word)."""
    inputs: list = [t.split(" ") for t in texts] if words else texts
    if pairs is not None:
        inputs = list(zip(inputs, [p.split(" ") for p in pairs] if words else pairs, strict=True))
    return tokenizer.encode_batch(inputs, is_pretokenized=words)
