"""The encoder interface mtl uses (`Encoder`), and its native implementation: a compact BERT in
plain PyTorch that reads and writes Hugging Face BERT checkpoints.

BERT: Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding" (arXiv:1810.04805). Post-LayerNorm transformer layers (Vaswani et al. 2017) with an
exact (erf) GELU feed-forward. Query, key and value projections are fused into one matmul; the
Hugging Face layout (separate query/key/value) is restored on save.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtl.dropout import Dropout, dropout
from mtl.errors import CheckpointError
from mtl.io import atomic_write_text
from mtl.tensor_files import atomic_save_safetensors, load_data, load_safetensors


class Pooling(str, Enum):
    cls = "cls"  # the first token's last state ([CLS], <s>)
    mean = "mean"  # the mean over real (non-padding) tokens


class Attention(str, Enum):
    auto = "auto"  # the fastest path for device, dtype and mode
    sdpa = "sdpa"  # F.scaled_dot_product_attention
    math = "math"  # explicit matmul-softmax-matmul


def _choice(enum: type[Enum], value: object, key: str) -> str:
    """`value` as the plain string of one of `enum`'s members, or ValueError naming `key`."""
    try:
        return enum(value).value
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in enum)
        raise ValueError(f"{key} must be one of {allowed}, got {value!r}") from None


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384  # C
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536  # feed-forward width, usually 4C
    max_position: int = 512  # longest sequence the position table covers
    type_vocab_size: int = 2  # segment ids: 0 = first text, 1 = text pair
    dropout: float = 0.1  # on embeddings and sub-layer outputs
    attention_dropout: float = 0.1  # on attention probabilities
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    pooling: str = "mean"  # a Pooling; mean where a checkpoint's config.json has no `pooling`
    attention: str = "auto"  # an Attention: "auto" picks the fastest path

    # Hugging Face config.json key for each field that lives there (pooling/attention do not).
    HF_KEYS = {
        "vocab_size": "vocab_size",
        "hidden_size": "hidden_size",
        "num_layers": "num_hidden_layers",
        "num_heads": "num_attention_heads",
        "intermediate_size": "intermediate_size",
        "max_position": "max_position_embeddings",
        "type_vocab_size": "type_vocab_size",
        "dropout": "hidden_dropout_prob",
        "attention_dropout": "attention_probs_dropout_prob",
        "layer_norm_eps": "layer_norm_eps",
        "pad_token_id": "pad_token_id",
    }

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        self.pooling = _choice(Pooling, self.pooling, "pooling")
        self.attention = _choice(Attention, self.attention, "attention")

    @classmethod
    def from_hf(cls, hf: dict, source: str = "config.json", **overrides) -> BertConfig:
        """Read a Hugging Face BERT config dict; refuse other architectures by name."""
        refusal = native_refusal(hf)
        if refusal:
            raise CheckpointError(f"{source}: {refusal}")
        fields = {f: hf[k] for f, k in cls.HF_KEYS.items() if k in hf}
        if "pooling" in hf:  # written by save_pretrained; not a Hugging Face key
            fields["pooling"] = hf["pooling"]
        return cls(**{**fields, **overrides})

    def to_hf(self) -> dict:
        hf = {k: getattr(self, f) for f, k in self.HF_KEYS.items()}
        return {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
            "initializer_range": 0.02,
            **hf,
            "pooling": self.pooling,  # mtl's own key (transformers ignores it)
        }


def native_refusal(hf: dict) -> str | None:
    """Why the native encoder cannot read a Hugging Face config dict (None: it can)."""
    model_type = hf.get("model_type", "bert")  # very old BERT configs have none
    if model_type != "bert":
        return (
            f"model_type is {model_type!r}, but mtl's native encoder loads BERT checkpoints only "
            "(model_type 'bert'); encoder.backend=auto or hf reads it through transformers"
        )
    act = hf.get("hidden_act", "gelu")
    if act != "gelu":
        return f"hidden_act {act!r} is not supported by the native encoder (only 'gelu')"
    position = hf.get("position_embedding_type", "absolute")
    if position != "absolute":
        return (
            f"position_embedding_type {position!r} is not supported by the native encoder "
            "(only 'absolute')"
        )
    return None


def read_config(path: Path) -> dict:
    """A checkpoint directory's config.json, as a dict."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json, so this is not an encoder checkpoint")
    try:
        hf = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{config_file}: not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise CheckpointError(f"{config_file}: expected a JSON object")
    return hf


class BertOutput(NamedTuple):
    hidden: Tensor  # (B, T, C) last-layer state of every token
    pooled: Tensor  # (B, C) sentence vector


def pool(x: Tensor, keep: Tensor, pooling: str) -> Tensor:
    """x: (B, T, C) token states, keep: (B, T) True at real tokens -> (B, C) sentence vectors."""
    if pooling == "cls":
        return x[:, 0]
    w = keep.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * w).sum(1) / w.sum(1).clamp(min=1)


class EncoderShape(Protocol):
    """What mtl reads of an encoder's configuration (`encoder.cfg`)."""

    vocab_size: int  # rows of the word embedding
    hidden_size: int  # C
    num_layers: int
    max_position: int  # the longest input it takes, in tokens
    pad_token_id: int
    layer_norm_eps: float
    pooling: str  # a Pooling

    def to_hf(self) -> dict:
        """The configuration as a Hugging Face config dict (plain JSON values), which mtl
        stores in checkpoints and rebuilds the encoder from (mtl/pretrained.py)."""
        ...


class Encoder(nn.Module, ABC):
    """The shared encoder as mtl uses it, whichever backend built it (`encoder.backend`):
    called on (B, T) token ids, attention mask and segment ids it returns a BertOutput;
    `layer_groups` lists its parameters from the bottom up (freezing, layer-wise learning-rate
    decay, gradual unfreezing); `word_embeddings` is what the masked-LM head is tied to.
    Implementations: `Bert` (native) and `mtl.hf_encoder.HFEncoder` (transformers' AutoModel).
    """

    backend: str  # "native" or "hf", as encoder.backend names it
    cfg: EncoderShape
    mlm_weights: dict[str, Tensor]  # a checkpoint's masked-LM head (mtl.heads' names), or {}

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    @property
    @abstractmethod
    def word_embeddings(self) -> nn.Embedding:
        """The word embedding: (V, E) rows, E = C unless the architecture projects them."""

    @abstractmethod
    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> BertOutput:
        """input_ids, attention_mask (1 = real token), token_type_ids: (B, T)."""

    @abstractmethod
    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Every parameter once, from the bottom up: [embeddings, layer 0, ..., layer L-1]."""

    @abstractmethod
    def truncate(self, layers: int) -> None:
        """Keep the bottom `layers` transformer layers: the top ones are dropped, so the
        sentence vector pools layer `layers`'s output. Lower layers of a pretrained encoder
        carry more lexical and surface detail, upper ones more of the pretraining objective
        (Tenney et al. 2019, "BERT Rediscovers the Classical NLP Pipeline")."""

    @abstractmethod
    def with_options(self, **options: Any) -> Encoder:
        """A copy with these weights and other settings (pooling, attention, dropout,
        attention_dropout), for `encoder.init_from`."""

    @abstractmethod
    def save_pretrained(self, path: str | Path) -> None:
        """Write config.json + model.safetensors in the Hugging Face layout."""

    def freeze(self, embeddings: bool = False, layers: int = 0) -> None:
        """Stop gradients into the embeddings and/or the bottom `layers` transformer layers
        (a negative number -k: all but the top k layers)."""
        groups = self.layer_groups()
        count = len(groups) - 1
        if layers < 0:
            layers = max(0, count + layers)
        if layers > count:
            raise ValueError(f"cannot freeze {layers} layers of a {count}-layer encoder")
        frozen = ([groups[0]] if embeddings else []) + groups[1 : 1 + layers]
        for params in frozen:
            for p in params:
                p.requires_grad_(False)


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))  # (B, T, C)


class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.attention = cfg.attention
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.dropout_p = cfg.attention_dropout

    def use_math(self, x: Tensor) -> bool:
        """The explicit path wins for bf16 training on CPU (SDPA's CPU backward is slow there)."""
        if self.attention != "auto":
            return self.attention == "math"
        return (
            self.training
            and x.device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, T, C); mask: (B, 1, 1, T) True where a key is a real token."""
        B, T, C = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        p = self.dropout_p if self.training else 0.0
        if self.use_math(x):
            att = (q @ k.transpose(-2, -1)) * (C // H) ** -0.5  # (B, H, T, T)
            att = att.masked_fill(~mask, torch.finfo(att.dtype).min).softmax(dim=-1)
            y = dropout(att, p) @ v  # (B, H, T, D)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return y.transpose(1, 2).reshape(B, T, C)


class Layer(nn.Module):
    """Post-LN transformer layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        C, eps = cfg.hidden_size, cfg.layer_norm_eps
        self.attn = SelfAttention(cfg)
        self.attn_out = nn.Linear(C, C)
        self.attn_norm = nn.LayerNorm(C, eps=eps)
        self.ffn_in = nn.Linear(C, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, C)
        self.ffn_norm = nn.LayerNorm(C, eps=eps)
        self.dropout = Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.attn_norm(x + self.dropout(self.attn_out(self.attn(x, mask))))
        return self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))  # (B, T, C)


class Bert(Encoder):
    backend = "native"

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg: BertConfig = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.apply(self._init_weights)
        self.mlm_weights: dict[str, Tensor] = {}  # a checkpoint's masked-LM head, if it had one

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm."""
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.embeddings.word

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> BertOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        keep = attention_mask.bool()
        mask = keep[:, None, None, :]  # (B, 1, 1, T), broadcast over heads and queries
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return BertOutput(hidden=x, pooled=pool(x, keep, self.cfg.pooling))

    # ---- the Encoder interface: layer groups, truncation, other settings ------------------

    def layer_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.embeddings.parameters())] + [list(m.parameters()) for m in self.layers]

    def truncate(self, layers: int) -> None:
        self.layers = self.layers[:layers]
        self.cfg = replace(self.cfg, num_layers=layers)

    def with_options(self, **options: Any) -> Bert:
        model = Bert(replace(self.cfg, **options))
        model.load_state_dict(self.state_dict())
        return model

    # ---- Hugging Face layout -------------------------------------------------------------

    def hf_state_dict(self) -> dict[str, Tensor]:
        """This model's weights under Hugging Face BertModel names (query/key/value split)."""
        native = self.state_dict()
        out: dict[str, Tensor] = {}
        for hf_name, (native_name, part) in hf_names(self.cfg).items():
            t = native[native_name]
            out[hf_name] = (t.chunk(3)[part] if part is not None else t).contiguous()
        return out

    def load_hf_state_dict(self, state: dict[str, Tensor], source: str) -> None:
        """Load HF BertModel weights (with or without 'bert.' prefix); strict, with clear errors."""
        state = normalize_hf_keys(state)
        expected = hf_names(self.cfg)
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{source}: weights do not match a {self.cfg.num_layers}-layer BERT; "
                f"missing keys: {_preview(missing)}; unexpected keys: {_preview(unexpected)}"
            )
        native = self.state_dict()
        parts: dict[str, list[Tensor | None]] = {}
        for hf_name, (native_name, part) in expected.items():
            t = state[hf_name]
            want = native[native_name].shape
            want = torch.Size([want[0] // 3, *want[1:]]) if part is not None else want
            if t.shape != want:
                raise CheckpointError(
                    f"{source}: {hf_name} has shape {tuple(t.shape)}, but the config "
                    f"implies {tuple(want)}"
                )
            if part is None:
                native[native_name] = t
            else:
                parts.setdefault(native_name, [None, None, None])[part] = t
        for native_name, qkv in parts.items():
            native[native_name] = torch.cat(qkv)  # type: ignore[arg-type]
        self.load_state_dict({k: v.float() for k, v in native.items()})

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides) -> Bert:
        """Load a Hugging Face BERT checkpoint directory; `overrides` replace config fields."""
        path = Path(path)
        hf = read_config(path)
        cfg = BertConfig.from_hf(hf, str(path / "config.json"), **overrides)
        model = cls(cfg)
        state, source = read_weights(path)
        model.load_hf_state_dict(state, source)
        model.mlm_weights = mlm_head_weights(state)
        return model

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "config.json", json.dumps(self.cfg.to_hf(), indent=2) + "\n")
        atomic_save_safetensors(self.hf_state_dict(), path / "model.safetensors")


def hf_names(cfg: BertConfig) -> dict[str, tuple[str, int | None]]:
    """HF BertModel name -> (native name, which third of a fused qkv tensor or None)."""
    names: dict[str, tuple[str, int | None]] = {}
    for hf, nat in [
        ("embeddings.word_embeddings", "embeddings.word"),
        ("embeddings.position_embeddings", "embeddings.position"),
        ("embeddings.token_type_embeddings", "embeddings.token_type"),
    ]:
        names[f"{hf}.weight"] = (f"{nat}.weight", None)
    for p in ("weight", "bias"):
        names[f"embeddings.LayerNorm.{p}"] = (f"embeddings.norm.{p}", None)
        for i in range(cfg.num_layers):
            hf, nat = f"encoder.layer.{i}", f"layers.{i}"
            for part, proj in enumerate(("query", "key", "value")):
                names[f"{hf}.attention.self.{proj}.{p}"] = (f"{nat}.attn.qkv.{p}", part)
            for hf_mod, nat_mod in [
                ("attention.output.dense", "attn_out"),
                ("attention.output.LayerNorm", "attn_norm"),
                ("intermediate.dense", "ffn_in"),
                ("output.dense", "ffn_out"),
                ("output.LayerNorm", "ffn_norm"),
            ]:
                names[f"{hf}.{hf_mod}.{p}"] = (f"{nat}.{nat_mod}.{p}", None)
    return names


IGNORED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")


def normalize_hf_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Strip a 'bert.' prefix, rename old gamma/beta LayerNorm keys, drop pooler and LM heads."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("bert.")
        if key.startswith(IGNORED_PREFIXES):
            continue
        if ".LayerNorm." in key:
            key = key.replace(".gamma", ".weight").replace(".beta", ".bias")
        out[key] = value
    return out


MLM_HEAD = {  # BertForMaskedLM's cls.predictions.* -> mtl.heads.MaskedLMHead
    "cls.predictions.transform.dense.weight": "dense.weight",
    "cls.predictions.transform.dense.bias": "dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "norm.bias",
    "cls.predictions.bias": "bias",
}


def mlm_head_weights(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The masked-LM head's weights in a checkpoint (all of them, or none); the decoder is tied
    to the word embeddings, so it is not among them."""
    state = {k.removeprefix("bert.").replace(".gamma", ".weight").replace(".beta", ".bias"): v
             for k, v in state.items() if "cls.predictions" in k}  # fmt: skip
    found = {ours: state[theirs].float() for theirs, ours in MLM_HEAD.items() if theirs in state}
    return found if len(found) == len(MLM_HEAD) else {}


def read_weights(path: Path) -> tuple[dict[str, Tensor], str]:
    """The state dict of a checkpoint directory (safetensors preferred) and its file name."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        file = path / name
        if file.is_file():
            if name.endswith(".safetensors"):
                return load_safetensors(file), str(file)
            return load_data(file), str(file)
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin found")


def _preview(keys: list[str], n: int = 5) -> str:
    if not keys:
        return "none"
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
