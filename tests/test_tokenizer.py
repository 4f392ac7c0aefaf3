"""mtl.tokenizer against transformers' tokenizer on real German and English sentences.

Sentences come from the read-only shared data (../shared/data beside the repository): German
TextComplexityDE19 sentences, German tweets (UMSAB / SB-10k) and English SST-2 dev sentences.
"""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from mtl.encoder import CheckpointError
from mtl.tokenizer import encode, is_lowercase, load_tokenizer

transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()

PER_SOURCE = 120  # sentences taken from each of the three data sets
SEP_ID, CLS_ID, PAD_ID = 102, 101, 0


def _every_nth(items: list[str], n: int) -> list[str]:
    """`n` items spread evenly over the list (deterministic)."""
    step = max(1, len(items) // n)
    return items[::step][:n]


@pytest.fixture(scope="module")
def sentences(shared_data) -> dict[str, list[str]]:
    """German complexity sentences, German tweets and English SST-2 dev sentences."""
    ratings = shared_data / "TextComplexityDE19" / "ratings.csv"
    with open(ratings, encoding="cp1252", newline="") as f:  # cp1252 with CRLF, not UTF-8
        german = [row["Sentence"] for row in csv.DictReader(f)]
    tweets = (shared_data / "umsab_german_sentiment" / "test_text.txt").read_text(encoding="utf-8")
    with open(shared_data / "sst2" / "dev.tsv", encoding="utf-8", newline="") as f:
        sst = [row["sentence"] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    out = {
        "german": _every_nth(german, PER_SOURCE),
        "tweets": _every_nth([t for t in tweets.splitlines() if t.strip()], PER_SOURCE),
        "sst2": _every_nth(sst, PER_SOURCE),
    }
    for name, texts in out.items():
        assert len(texts) == PER_SOURCE and all(texts), name
    assert any(c in "äöüß" for c in "".join(out["german"]))  # cp1252 decoded properly
    return out


@pytest.fixture(scope="module")
def all_texts(sentences) -> list[str]:
    return [t for texts in sentences.values() for t in texts]


@pytest.fixture(scope="module")
def all_pairs(sentences) -> tuple[list[str], list[str]]:
    """Cross-source pairs: German with English, tweets with German, English with tweets."""
    g, t, s = sentences["german"], sentences["tweets"], sentences["sst2"]
    return g + t + s, s + g + t


@pytest.fixture(scope="module")
def hf_tokenizer(minilm_dir):
    return transformers.AutoTokenizer.from_pretrained(minilm_dir)


def assert_same_encoding(tokenizer, hf_tok, texts, pairs, max_length):
    ids, types = encode(tokenizer, texts, pairs)
    ref = hf_tok(texts, pairs, truncation=True, max_length=max_length)
    assert len(ids) == len(texts)
    for i, text in enumerate(texts):
        assert ids[i] == ref["input_ids"][i], (text, pairs[i] if pairs else None)
        assert types[i] == ref["token_type_ids"][i], (text, pairs[i] if pairs else None)
    return ids, types


@pytest.mark.parametrize("max_length", [512, 128, 24])
def test_single_texts_match_transformers(minilm_dir, hf_tokenizer, all_texts, max_length):
    tokenizer = load_tokenizer(minilm_dir, max_length)
    ids, types = assert_same_encoding(tokenizer, hf_tokenizer, all_texts, None, max_length)
    assert all(t == [0] * len(t) for t in types)
    assert all(x[0] == CLS_ID and x[-1] == SEP_ID for x in ids)
    assert all(len(x) <= max_length for x in ids)
    if max_length == 24:
        assert sum(len(x) == max_length for x in ids) > 10  # truncation really happened


@pytest.mark.parametrize("max_length", [512, 128, 32])
def test_pairs_match_transformers(minilm_dir, hf_tokenizer, all_pairs, max_length):
    tokenizer = load_tokenizer(minilm_dir, max_length)
    texts, pairs = all_pairs
    ids, types = assert_same_encoding(tokenizer, hf_tokenizer, texts, pairs, max_length)
    for x, t in zip(ids, types, strict=True):
        assert len(x) <= max_length and x[0] == CLS_ID and x[-1] == SEP_ID
        assert x.count(SEP_ID) == 2
        first_sep = x.index(SEP_ID)
        assert t == [0] * (first_sep + 1) + [1] * (len(x) - first_sep - 1)
    if max_length == 32:
        assert sum(len(x) == max_length for x in ids) > 10


def test_truncation_respected(minilm_dir):
    long_text = " ".join(["Seifenblase"] * 300)
    for max_length in (8, 16, 128, 512):
        tokenizer = load_tokenizer(minilm_dir, max_length)
        (ids,), _ = encode(tokenizer, [long_text])
        assert len(ids) == max_length and ids[0] == CLS_ID and ids[-1] == SEP_ID
        (pair_ids,), (pair_types,) = encode(tokenizer, [long_text], ["kurz"])
        assert len(pair_ids) == max_length and pair_ids[-1] == SEP_ID
        assert pair_ids.count(SEP_ID) == 2 and pair_types[-1] == 1


def test_packaged_fixed_padding_is_off(minilm_dir, sentences):
    # The packaged tokenizer.json pads to a fixed 128; load_tokenizer must switch that off.
    packaged = json.loads((minilm_dir / "tokenizer.json").read_text())
    assert packaged["padding"] is not None  # the premise of this test
    tokenizer = load_tokenizer(minilm_dir, 128)
    assert tokenizer.padding is None
    assert tokenizer.truncation["max_length"] == 128
    ids, _ = encode(tokenizer, sentences["sst2"])
    lengths = {len(x) for x in ids}
    assert len(lengths) > 5 and max(lengths) < 128
    assert all(PAD_ID not in x for x in ids)


def test_vocab_txt_only_matches(minilm_dir, hf_tokenizer, all_texts, all_pairs, tmp_path):
    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    tokenizer = load_tokenizer(tmp_path, 128)
    assert is_lowercase(tokenizer)
    assert tokenizer.padding is None
    assert_same_encoding(tokenizer, hf_tokenizer, all_texts, None, 128)
    texts, pairs = all_pairs
    assert_same_encoding(tokenizer, hf_tokenizer, texts, pairs, 128)
    # transformers building its own BertTokenizer from the same vocab.txt agrees too.
    hf_from_vocab = transformers.BertTokenizer.from_pretrained(tmp_path)
    assert_same_encoding(tokenizer, hf_from_vocab, texts, pairs, 128)


def test_vocab_txt_without_config_defaults_to_lowercase(minilm_dir, hf_tokenizer, tmp_path):
    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    tokenizer = load_tokenizer(tmp_path, 64)
    assert is_lowercase(tokenizer)
    texts = ["Die Straße in MÜNCHEN", "Héllo WORLD"]
    assert_same_encoding(tokenizer, hf_tokenizer, texts, None, 64)


def test_no_tokenizer_files_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer.json or vocab.txt"):
        load_tokenizer(tmp_path, 128)


def test_encode_rejects_mismatched_pairs(minilm_dir):
    tokenizer = load_tokenizer(minilm_dir, 128)
    with pytest.raises(ValueError):
        encode(tokenizer, ["a", "b"], ["only one"])
