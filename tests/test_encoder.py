"""The native BERT encoder against transformers.BertModel, checkpoint I/O, errors and freezing.

transformers is a test-only reference here (mtl never imports it at runtime). Every comparison
is in fp32 and eval mode unless a test says otherwise; bf16 autocast is checked against fp32
with a looser tolerance (see BF16_ATOL).
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mtl.encoder import Bert, BertConfig, CheckpointError
from mtl.errors import ConfigError
from mtl.pretrained import load_pretrained, resolve_pretrained, save_pretrained
from mtl.tokenizer import encode

transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

# fp32 parity: both implementations do the same arithmetic up to kernel choice/order.
FP32_ATOL = 1e-4
# bf16 autocast vs fp32: bf16 keeps 8 mantissa bits (relative rounding ~4e-3 per op). Over
# MiniLM's 6 layers the last hidden state (|x| up to ~6) drifts by ~0.03 at most; we allow
# 0.1 absolute and require every token vector to keep cosine similarity > 0.999 with fp32.
BF16_ATOL = 0.1
BF16_MIN_COS = 0.999

TINY = BertConfig(
    vocab_size=100,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    intermediate_size=64,
    max_position=64,
)

TEXTS = [
    "The cat sat on the mat.",
    "Etwa 5000 Jahre ist es her, seit die Sumerer das Sieden von Seife erfanden.",
    "ok",
    "it 's a charming and often affecting journey .",
    "@user korrekt! Verstehe sowas nicht... #schlefaz :D",
]
PAIRS = [
    "A dog lay on the rug.",
    "Als Nebenprodukt entstand damals natürlich auch die erste Seifenblase.",
    "fine, thanks",
    "unflinchingly bleak and desperate",
    "Einparken können die Aliens auch nicht!",
]


# ---- helpers ---------------------------------------------------------------------------------


def pad_batch(ids: list[list[int]], types: list[list[int]]) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence: input_ids, attention_mask, token_type_ids (B, T)."""
    T = max(map(len, ids))
    return {
        "input_ids": torch.tensor([x + [0] * (T - len(x)) for x in ids]),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (T - len(x)) for x in ids]),
        "token_type_ids": torch.tensor([t + [0] * (T - len(t)) for t in types]),
    }


def native_hidden(model: Bert, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).hidden


def hf_hidden(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).last_hidden_state


def max_diff(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor) -> float:
    """Max |a - b| over real (non-padding) tokens."""
    return (a.float() - b.float())[keep.bool()].abs().max().item()


def min_cos(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor) -> float:
    keep = keep.bool()
    return torch.cosine_similarity(a.float()[keep], b.float()[keep], dim=-1).min().item()


def randomize_(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial weights everywhere (biases and LayerNorms too, so q/k/v mix-ups show)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.2 * noise)


def tiny_model(seed: int = 0, **overrides) -> Bert:
    torch.manual_seed(seed)
    model = Bert(dataclasses.replace(TINY, **overrides))
    randomize_(model, seed)
    return model.eval()


def tiny_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """A padded batch of sentence pairs: [CLS]=1 a.. [SEP]=2 b.. [SEP], types 0 then 1."""
    gen = torch.Generator().manual_seed(seed)
    ids, types = [], []
    for len_a, len_b in [(5, 7), (3, 0), (10, 4), (1, 1)]:
        a = torch.randint(3, TINY.vocab_size, (len_a,), generator=gen).tolist()
        b = torch.randint(3, TINY.vocab_size, (len_b,), generator=gen).tolist()
        seq = [1, *a, 2] + ([*b, 2] if b else [])
        ids.append(seq)
        types.append([0] * (len_a + 2) + [1] * (len(seq) - len_a - 2))
    return pad_batch(ids, types)


def hf_from_native(model: Bert, attn_implementation: str = "eager"):
    """A transformers.BertModel built from the same config, weights copied via hf_state_dict()."""
    hf_cfg = transformers.BertConfig(**model.cfg.to_hf(), attn_implementation=attn_implementation)
    hf = transformers.BertModel(hf_cfg, add_pooling_layer=False)
    hf.load_state_dict(model.hf_state_dict(), strict=True)
    return hf.eval()


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_dir):
    return load_pretrained(minilm_dir, max_length=128)[1]


@pytest.fixture(scope="module")
def minilm_batch(minilm_tokenizer) -> dict[str, torch.Tensor]:
    """Padded batch: five single texts and five sentence pairs (token types 1 on the pair)."""
    ids, types = encode(minilm_tokenizer, TEXTS)
    pair_ids, pair_types = encode(minilm_tokenizer, TEXTS, PAIRS)
    batch = pad_batch(ids + pair_ids, types + pair_types)
    assert (batch["token_type_ids"] == 1).any() and (batch["attention_mask"] == 0).any()
    return batch


@pytest.fixture(scope="module")
def minilm_hf(minilm_dir):
    return transformers.BertModel.from_pretrained(minilm_dir).eval()


# ---- parity with transformers ----------------------------------------------------------------


@pytest.mark.parametrize("attention", ["sdpa", "math"])
@torch.no_grad()
def test_minilm_matches_transformers(minilm_dir, minilm_hf, minilm_batch, attention):
    native = Bert.from_pretrained(minilm_dir, attention=attention).eval()
    ref = hf_hidden(minilm_hf, minilm_batch)
    out = native_hidden(native, minilm_batch)
    assert out.dtype == torch.float32
    assert max_diff(out, ref, minilm_batch["attention_mask"]) < FP32_ATOL


@pytest.mark.parametrize("hf_attention", ["eager", "sdpa"])
@pytest.mark.parametrize("attention", ["sdpa", "math"])
@torch.no_grad()
def test_tiny_random_matches_transformers(attention, hf_attention):
    native = tiny_model(attention=attention)
    hf = hf_from_native(native, hf_attention)
    batch = tiny_batch()
    assert (batch["token_type_ids"] == 1).any() and (batch["attention_mask"] == 0).any()
    ref = hf_hidden(hf, batch)
    out = native_hidden(native, batch)
    assert ref.abs().max() > 0.5  # the random weights give non-trivial activations
    assert max_diff(out, ref, batch["attention_mask"]) < FP32_ATOL


@torch.no_grad()
def test_tiny_loads_transformers_weights():
    """The other direction: a random transformers model's state dict (pooler too) loads."""
    torch.manual_seed(1)
    hf = transformers.BertModel(transformers.BertConfig(**TINY.to_hf())).eval()
    randomize_(hf, seed=1)
    native = Bert(TINY).eval()
    native.load_hf_state_dict(hf.state_dict(), "transformers.BertModel")
    batch = tiny_batch(1)
    ref = hf_hidden(hf, batch)
    assert max_diff(native_hidden(native, batch), ref, batch["attention_mask"]) < FP32_ATOL


# ---- attention paths -------------------------------------------------------------------------


@torch.no_grad()
def test_attention_paths_agree_fp32_and_bf16(minilm_dir, minilm_batch):
    keep = minilm_batch["attention_mask"]
    out = {}
    for attention in ("sdpa", "math"):
        model = Bert.from_pretrained(minilm_dir, attention=attention).eval()
        out[attention, "fp32"] = native_hidden(model, minilm_batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out[attention, "bf16"] = native_hidden(model, minilm_batch)
    assert max_diff(out["sdpa", "fp32"], out["math", "fp32"], keep) < FP32_ATOL
    ref = out["math", "fp32"]
    # Autocast really ran in bf16 (the final LayerNorm returns fp32, so check the numbers).
    assert max_diff(out["sdpa", "bf16"], ref, keep) > 1e-3
    for attention in ("sdpa", "math"):
        assert max_diff(out[attention, "bf16"], ref, keep) < BF16_ATOL, attention
        assert min_cos(out[attention, "bf16"], ref, keep) > BF16_MIN_COS, attention
    assert max_diff(out["sdpa", "bf16"], out["math", "bf16"], keep) < BF16_ATOL


def test_attention_paths_agree_in_train_mode(minilm_dir, minilm_batch):
    """Dropout 0 in train mode: same outputs and same gradients from both paths (fp32)."""
    keep = minilm_batch["attention_mask"].bool()
    results = {}
    for attention in ("sdpa", "math"):
        model = Bert.from_pretrained(
            minilm_dir, attention=attention, dropout=0.0, attention_dropout=0.0
        ).train()
        hidden = native_hidden(model, minilm_batch)
        (hidden[keep] ** 2).mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        results[attention] = hidden.detach(), grads
    (h_sdpa, g_sdpa), (h_math, g_math) = results["sdpa"], results["math"]
    assert max_diff(h_sdpa, h_math, keep) < FP32_ATOL
    for name, g in g_sdpa.items():
        scale = g.abs().max().clamp(min=1e-8)
        assert (g - g_math[name]).abs().max() / scale < 1e-3, name


def test_attention_paths_agree_bf16_train_mode():
    """bf16 autocast training forward (tiny model): math vs sdpa within the bf16 tolerance."""
    batch = tiny_batch()
    keep = batch["attention_mask"]
    outs = {}
    for attention in ("sdpa", "math"):
        model = tiny_model(attention=attention, dropout=0.0, attention_dropout=0.0).train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs[attention] = native_hidden(model, batch)
    assert max_diff(outs["sdpa"], outs["math"], keep) < BF16_ATOL
    assert min_cos(outs["sdpa"], outs["math"], keep) > BF16_MIN_COS


def test_auto_attention_picks_math_for_bf16_cpu_training():
    model = tiny_model(attention="auto")
    attn = model.layers[0].attn
    x = torch.zeros(1, 2, TINY.hidden_size)
    model.eval()
    assert not attn.use_math(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not attn.use_math(x)
    model.train()
    assert not attn.use_math(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert attn.use_math(x)
    assert tiny_model(attention="math").layers[0].attn.use_math(x)
    assert not tiny_model(attention="sdpa").train().layers[0].attn.use_math(x)


# ---- pooling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["sdpa", "math"])
@torch.no_grad()
def test_pooling(attention):
    batch = tiny_batch()
    cls_model = tiny_model(attention=attention, pooling="cls")
    mean_model = tiny_model(attention=attention, pooling="mean")
    out_cls = cls_model(**batch)
    out_mean = mean_model(**batch)
    torch.testing.assert_close(out_cls.hidden, out_mean.hidden, rtol=0, atol=0)
    assert torch.equal(out_cls.pooled, out_cls.hidden[:, 0])

    w = batch["attention_mask"].unsqueeze(-1).float()
    by_hand = (out_mean.hidden * w).sum(1) / w.sum(1)
    torch.testing.assert_close(out_mean.pooled, by_hand, rtol=1e-6, atol=1e-6)

    # Padding must not leak in: each row alone, unpadded, pools to the same vector.
    for i, n in enumerate(batch["attention_mask"].sum(1).tolist()):
        alone = {k: v[i : i + 1, :n] for k, v in batch.items()}
        torch.testing.assert_close(
            mean_model(**alone).pooled[0], out_mean.pooled[i], rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(
            cls_model(**alone).pooled[0], out_cls.pooled[i], rtol=1e-5, atol=1e-5
        )


@torch.no_grad()
def test_defaults_for_mask_and_token_types():
    model = tiny_model()
    ids = tiny_batch()["input_ids"]
    explicit = model(ids, torch.ones_like(ids), torch.zeros_like(ids)).hidden
    assert torch.equal(model(ids).hidden, explicit)


# ---- save -> load round trip -----------------------------------------------------------------


@torch.no_grad()
def test_save_pretrained_round_trip(minilm_dir, minilm_tokenizer, minilm_batch, tmp_path):
    model = Bert.from_pretrained(minilm_dir).eval()
    # A "fine-tuned" model: save must write the current weights, q/k/v split in the right order.
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.add_(0.01 * torch.randn(p.shape, generator=gen))
    original = native_hidden(model, minilm_batch)
    keep = minilm_batch["attention_mask"]

    save_pretrained(model, minilm_tokenizer, tmp_path)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "bert"

    hf, info = transformers.BertModel.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert {k for k in info["missing_keys"] if not k.startswith("pooler.")} == set()
    assert max_diff(hf_hidden(hf.eval(), minilm_batch), original, keep) < 1e-5

    reloaded = Bert.from_pretrained(tmp_path).eval()
    assert reloaded.cfg == model.cfg
    assert max_diff(native_hidden(reloaded, minilm_batch), original, keep) < 1e-5

    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for pairs in (None, PAIRS):
        ids, types = encode(minilm_tokenizer, TEXTS, pairs)
        ref = hf_tok(TEXTS, pairs, truncation=True, max_length=128)
        assert ids == ref["input_ids"]
        assert types == ref["token_type_ids"]


# ---- loading variants ------------------------------------------------------------------------


def write_config(path: Path, cfg: BertConfig | dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    hf = cfg.to_hf() if isinstance(cfg, BertConfig) else cfg
    (path / "config.json").write_text(json.dumps(hf))


@torch.no_grad()
def test_loads_pretraining_checkpoint_with_prefix_heads_and_pooler(tmp_path):
    """A transformers BertForPreTraining save: 'bert.' prefix, pooler, cls.* heads."""
    native = tiny_model()
    hf = transformers.BertForPreTraining(transformers.BertConfig(**TINY.to_hf()))
    hf.bert.load_state_dict(native.hf_state_dict(), strict=False)
    hf.save_pretrained(tmp_path)
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert any(k.startswith("bert.pooler.") for k in keys)
    assert any(k.startswith("cls.predictions.") for k in keys)
    assert all(k.startswith(("bert.", "cls.")) for k in keys)

    loaded = Bert.from_pretrained(tmp_path).eval()
    batch = tiny_batch()
    assert torch.equal(native_hidden(loaded, batch), native_hidden(native, batch))


@torch.no_grad()
def test_loads_pytorch_model_bin_with_old_layernorm_names(tmp_path):
    """torch.save'd state dict with 'bert.' prefix, gamma/beta LayerNorms, position_ids, heads."""
    native = tiny_model()
    state = {}
    for key, value in native.hf_state_dict().items():
        if ".LayerNorm." in key:
            key = key.replace(".weight", ".gamma").replace(".bias", ".beta")
        state[f"bert.{key}"] = value
    state["bert.embeddings.position_ids"] = torch.arange(TINY.max_position)[None]
    state["bert.pooler.dense.weight"] = torch.zeros(TINY.hidden_size, TINY.hidden_size)
    state["cls.predictions.bias"] = torch.zeros(TINY.vocab_size)
    state["cls.predictions.transform.LayerNorm.gamma"] = torch.ones(TINY.hidden_size)
    write_config(tmp_path, TINY)
    torch.save(state, tmp_path / "pytorch_model.bin")

    loaded = Bert.from_pretrained(tmp_path).eval()
    batch = tiny_batch()
    assert torch.equal(native_hidden(loaded, batch), native_hidden(native, batch))


@torch.no_grad()
def test_prefers_safetensors_over_bin(tmp_path):
    native = tiny_model(seed=0)
    native.save_pretrained(tmp_path)
    torch.save(tiny_model(seed=1).hf_state_dict(), tmp_path / "pytorch_model.bin")
    loaded = Bert.from_pretrained(tmp_path)
    assert torch.equal(loaded.embeddings.word.weight, native.embeddings.word.weight)


def test_from_pretrained_overrides(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    loaded = Bert.from_pretrained(tmp_path, dropout=0.0, pooling="mean", attention="math")
    assert (loaded.cfg.dropout, loaded.cfg.pooling, loaded.cfg.attention) == (0.0, "mean", "math")
    assert loaded.cfg.hidden_size == TINY.hidden_size


# ---- clear errors ----------------------------------------------------------------------------


def test_error_config_without_weights(tmp_path):
    write_config(tmp_path, TINY)
    with pytest.raises(CheckpointError, match="no model.safetensors or pytorch_model.bin"):
        Bert.from_pretrained(tmp_path)


def test_error_no_config(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        Bert.from_pretrained(tmp_path)


def test_error_not_bert(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    write_config(tmp_path, {**TINY.to_hf(), "model_type": "gpt2", "architectures": ["GPT2Model"]})
    with pytest.raises(CheckpointError, match=r"model_type is 'gpt2'.*BERT checkpoints only"):
        Bert.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (
            "intermediate_size",
            48,
            "encoder.layer.0.intermediate.dense.weight has shape (64, 32), "
            "but the config implies (48, 32)",
        ),
        (
            "vocab_size",
            120,
            "embeddings.word_embeddings.weight has shape (100, 32), "
            "but the config implies (120, 32)",
        ),
    ],
)
def test_error_shape_mismatch_names_key_and_shapes(tmp_path, field, value, message):
    tiny_model().save_pretrained(tmp_path)
    write_config(tmp_path, dataclasses.replace(TINY, **{field: value}))
    with pytest.raises(CheckpointError, match=re.escape(message)):
        Bert.from_pretrained(tmp_path)


def test_error_missing_key_named(tmp_path):
    state = tiny_model().hf_state_dict()
    del state["encoder.layer.1.output.dense.bias"]
    write_config(tmp_path, TINY)
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"missing keys: encoder\.layer\.1\.output\.dense\.bias; unexpected keys: none",
    ):
        Bert.from_pretrained(tmp_path)


def test_error_layer_count_mismatch(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    write_config(tmp_path, dataclasses.replace(TINY, num_layers=3))
    with pytest.raises(CheckpointError, match=r"3-layer BERT; missing keys: encoder\.layer\.2\."):
        Bert.from_pretrained(tmp_path)
    write_config(tmp_path, dataclasses.replace(TINY, num_layers=1))
    with pytest.raises(
        CheckpointError, match=r"missing keys: none; unexpected keys: encoder\.layer\.1\."
    ):
        Bert.from_pretrained(tmp_path)


def test_error_resolve_pretrained_missing_path(tmp_path):
    missing = tmp_path / "does-not-exist"
    with pytest.raises(
        CheckpointError, match="neither 'minilm', 'multilingual_e5_small' nor an existing directory"
    ):
        resolve_pretrained(missing)
    with pytest.raises(CheckpointError, match=re.escape(repr(str(missing)))):
        resolve_pretrained(str(missing))


def test_resolve_pretrained_directory(tmp_path):
    assert resolve_pretrained(tmp_path) == tmp_path
    shutil.rmtree(tmp_path)
    with pytest.raises(CheckpointError):
        resolve_pretrained(tmp_path)


# ---- freezing and layer groups ---------------------------------------------------------------


def test_freeze_embeddings_and_bottom_layers():
    model = tiny_model(num_layers=4)
    model.freeze(embeddings=True, layers=2)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    bottom = ("embeddings.", "layers.0.", "layers.1.")
    expected = {n for n, _ in model.named_parameters() if n.startswith(bottom)}
    assert frozen == expected
    assert any(n.startswith("layers.2.") for n, p in model.named_parameters() if p.requires_grad)

    # Gradients reach only the trainable part.
    model.train()
    model(**tiny_batch()).pooled.sum().backward()
    for name, p in model.named_parameters():
        assert (p.grad is None) == (name in expected), name


def test_freeze_rejects_too_many_layers():
    with pytest.raises(ValueError, match="cannot freeze 3 layers of a 2-layer encoder"):
        tiny_model().freeze(layers=3)


def test_layer_groups_cover_all_parameters_once():
    model = tiny_model(num_layers=3)
    groups = model.layer_groups()
    assert len(groups) == model.cfg.num_layers + 1
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert {id(p) for p in groups[0]} == {id(p) for p in model.embeddings.parameters()}
    for i, group in enumerate(groups[1:]):
        assert {id(p) for p in group} == {id(p) for p in model.layers[i].parameters()}


def test_save_keeps_pooling_and_truncation(minilm_dir, tmp_path):
    model, tokenizer = load_pretrained(minilm_dir, 96, pooling="mean")
    save_pretrained(model, tokenizer, tmp_path)
    assert Bert.from_pretrained(tmp_path).cfg.pooling == "mean"
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert len(hf_tok(" ".join(["wort"] * 500), truncation=True)["input_ids"]) == 96


def test_error_max_length_beyond_position_table(minilm_dir):
    with pytest.raises(ConfigError, match=r"encoder\.max_length=1024 exceeds the 512 positions"):
        load_pretrained(minilm_dir, 1024)
