"""Encoders of any encoder-only architecture that transformers' AutoModel builds (RoBERTa, XLM-R,
ELECTRA, DeBERTa-v2/v3, DistilBERT, ModernBERT, ...) behind mtl's `Encoder` interface
(`encoder.backend=hf`, or `auto` for a checkpoint that is not a BERT).

transformers is an optional extra (`pip install -e '.[hf]'`), imported here only, and only
when such an encoder is built. mtl pools the last layer's states itself (the checkpoint's
pooler, if any, is dropped) and writes the Hugging Face layout back (config.json with mtl's
`pooling` and `mtl_backend` keys, model.safetensors), so `transformers.AutoModel` loads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from mtl.encoder import (
    MLM_HEAD,
    Attention,
    BertOutput,
    Encoder,
    Pooling,
    _choice,
    pool,
    read_config,
)
from mtl.errors import CheckpointError
from mtl.io import atomic_write_text
from mtl.tensor_files import atomic_save_safetensors, load_data

INSTALL = "pip install -e '.[hf]'"
BACKEND_KEY = "mtl_backend"  # in config.json and checkpoints: which backend rebuilds it

# mtl's dropout overrides -> the config keys that hold them, by architecture (BERT-like,
# DistilBERT, ModernBERT); a key an architecture does not have is skipped.
DROPOUT_KEYS = {
    "dropout": ("hidden_dropout_prob", "dropout", "embedding_dropout", "mlp_dropout"),
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout"),
}
ATTENTION = {"auto": None, "sdpa": "sdpa", "math": "eager"}  # Attention -> attn_implementation
TOP_NORMS = ("final_norm.",)  # a norm on the top layer's output (ModernBERT) goes with that layer

# Checkpoints' masked-LM heads -> mtl.heads.MaskedLMHead (dense -> GELU -> LayerNorm -> the
# tied decoder + bias); the first complete one is used.
MLM_HEADS = (
    {"lm_head.dense.weight": "dense.weight", "lm_head.dense.bias": "dense.bias",
     "lm_head.layer_norm.weight": "norm.weight", "lm_head.layer_norm.bias": "norm.bias",
     "lm_head.bias": "bias"},  # RoBERTa, XLM-R, CamemBERT
    {"vocab_transform.weight": "dense.weight", "vocab_transform.bias": "dense.bias",
     "vocab_layer_norm.weight": "norm.weight", "vocab_layer_norm.bias": "norm.bias",
     "vocab_projector.bias": "bias"},  # DistilBERT
    {"generator_predictions.dense.weight": "dense.weight",
     "generator_predictions.dense.bias": "dense.bias",
     "generator_predictions.LayerNorm.weight": "norm.weight",
     "generator_predictions.LayerNorm.bias": "norm.bias",
     "generator_lm_head.bias": "bias"},  # ELECTRA's generator
    {"lm_predictions.lm_head.dense.weight": "dense.weight",
     "lm_predictions.lm_head.dense.bias": "dense.bias",
     "lm_predictions.lm_head.LayerNorm.weight": "norm.weight",
     "lm_predictions.lm_head.LayerNorm.bias": "norm.bias",
     "lm_predictions.lm_head.bias": "bias"},  # DeBERTa-v2/v3
    MLM_HEAD,  # BERT's cls.predictions (also older DeBERTa-v2 checkpoints)
)  # fmt: skip


def transformers_module(source: str) -> ModuleType:
    """transformers, or an error naming `source` and the install command."""
    try:
        import transformers
    except ImportError:
        raise CheckpointError(
            f"{source}: this encoder is read through transformers (encoder.backend=hf, or auto "
            f"for an architecture other than BERT), which is not installed; install it with: "
            f"{INSTALL}"
        ) from None
    return transformers


class HFShape:
    """An hf encoder's configuration: transformers' config object and mtl's pooling."""

    def __init__(self, config: Any, pooling: str, position_offset: int) -> None:
        self.config = config  # a transformers PretrainedConfig
        self.pooling = _choice(Pooling, pooling, "pooling")
        self.position_offset = position_offset  # positions RoBERTa-likes skip (pad id + 1)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def max_position(self) -> int:
        return self.config.max_position_embeddings - self.position_offset

    @property
    def pad_token_id(self) -> int:
        return self.config.pad_token_id

    @property
    def layer_norm_eps(self) -> float:
        eps = getattr(self.config, "layer_norm_eps", None)  # ModernBERT: norm_eps
        return eps if eps is not None else getattr(self.config, "norm_eps", 1e-12)

    def to_hf(self) -> dict:
        hf = json.loads(self.config.to_json_string(use_diff=False))
        return {**hf, "pooling": self.pooling, BACKEND_KEY: "hf"}


class HFEncoder(Encoder):
    """A transformers base model (AutoModel) as mtl's encoder; it runs as transformers runs it."""

    backend = "hf"

    def __init__(self, model: nn.Module, pooling: str) -> None:
        super().__init__()
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # mtl pools the last layer itself (cls or mean)
        self.model = model.train()  # as a new module is (transformers loads it in eval mode)
        config = model.config
        self.layers_path = _layers_path(model, config.num_hidden_layers, config.model_type)
        # RoBERTa-likes number positions from the padding id + 1: fewer tokens fit
        position = getattr(model.get_submodule("embeddings"), "position_embeddings", None)
        pad = getattr(position, "padding_idx", None)
        self.cfg: HFShape = HFShape(config, pooling, 0 if pad is None else pad + 1)
        # segment ids only where the architecture has more than one segment embedding
        self.segments = (getattr(config, "type_vocab_size", 0) or 0) > 1
        self.mlm_weights = {}

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> BertOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        segments = {"token_type_ids": token_type_ids} if self.segments else {}
        x = self.model(input_ids=input_ids, attention_mask=attention_mask, **segments)
        hidden = x.last_hidden_state  # (B, T, C)
        pooled = pool(hidden, attention_mask.bool(), self.cfg.pooling)  # (B, C)
        return BertOutput(hidden=hidden, pooled=pooled)

    def _layers(self) -> nn.ModuleList:
        return self.model.get_submodule(self.layers_path)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Each layer's parameters; the embeddings group holds every other parameter (what
        sits below or is shared by all layers: embeddings, their projection, DeBERTa's relative
        position embeddings), except a norm on the top layer's output, which joins that layer."""
        layers = self._layers()
        which = {id(p): 1 + i for i, layer in enumerate(layers) for p in layer.parameters()}
        groups: list[list[nn.Parameter]] = [[] for _ in range(len(layers) + 1)]
        for name, p in self.model.named_parameters():
            group = which.get(id(p), len(layers) if name.startswith(TOP_NORMS) else 0)
            groups[group].append(p)
        return groups

    def truncate(self, layers: int) -> None:
        parent_path, _, name = self.layers_path.rpartition(".")
        parent = self.model.get_submodule(parent_path) if parent_path else self.model
        setattr(parent, name, self._layers()[:layers])
        config = self.cfg.config
        if isinstance(getattr(config, "layer_types", None), list):  # ModernBERT: one per layer
            config.layer_types = config.layer_types[:layers]
        config.num_hidden_layers = layers

    def with_options(self, **options: Any) -> HFEncoder:
        model = from_description(self.cfg.to_hf(), "the encoder of encoder.init_from", **options)
        model.load_state_dict(self.state_dict())
        model.mlm_weights = dict(self.mlm_weights)
        return model

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / "config.json", json.dumps(self.cfg.to_hf(), indent=2) + "\n")
        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        atomic_save_safetensors(state, path / "model.safetensors")


def _layers_path(model: nn.Module, count: int, model_type: str) -> str:
    """The name of the model's list of transformer layers (encoder.layer, transformer.layer,
    layers, ...): the first module list as long as the config's number of layers."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return name
    raise CheckpointError(
        f"model_type {model_type!r}: mtl finds no list of its {count} layers, so it cannot "
        "freeze, truncate or decay them layer by layer"
    )


def hf_config(hf: dict, source: str, **options: Any) -> tuple[Any, str, str | None]:
    """transformers' config for a config dict with mtl's settings applied, the pooling (the
    option, else the dict's `pooling`, else mean) and the attn_implementation. `options`:
    pooling, attention, dropout, attention_dropout, pad_token_id."""
    transformers = transformers_module(source)
    from transformers.models.auto import modeling_auto as auto

    model_type = hf.get("model_type")
    if model_type not in transformers.CONFIG_MAPPING:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not an architecture transformers "
            f"{transformers.__version__} knows"
        )
    seq2seq = auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES
    if model_type not in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES or model_type in seq2seq:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} is not an encoder-only architecture (mtl "
            "reads encoders such as BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2, DistilBERT)"
        )
    own = {k: v for k, v in hf.items() if k not in ("pooling", BACKEND_KEY)}
    config = transformers.CONFIG_MAPPING[model_type].from_dict(own)
    keys = config.to_dict()
    for option, names in DROPOUT_KEYS.items():
        if options.get(option) is not None:
            for name in names:
                if name in keys:
                    setattr(config, name, options[option])
    if options.get("pad_token_id") is not None:
        config.pad_token_id = options["pad_token_id"]
    for key in ("dtype", "torch_dtype"):  # mtl keeps weights in float32 (bf16: autocast)
        if key in keys:
            setattr(config, key, torch.float32)
    pooling = options.get("pooling") or hf.get("pooling") or Pooling.mean.value
    attention = ATTENTION[_choice(Attention, options.get("attention", "auto"), "attention")]
    return config, pooling, attention


def from_description(hf: dict, source: str, **options: Any) -> HFEncoder:
    """An encoder of the architecture a config dict describes (a checkpoint's `mtl_model`
    entry), with fresh weights: the checkpoint's are loaded next."""
    transformers = transformers_module(source)
    config, pooling, attention = hf_config(hf, source, **options)
    model = transformers.AutoModel.from_config(config, attn_implementation=attention)
    return HFEncoder(model, pooling)


def from_pretrained(path: Path, **options: Any) -> HFEncoder:
    """The encoder in a Hugging Face checkpoint directory; every weight of the base model must
    be there (the pooler aside), and a masked-LM head, if the checkpoint has one, is kept."""
    source = str(path / "config.json")
    transformers = transformers_module(source)
    config, pooling, attention = hf_config(read_config(path), source, **options)
    try:
        with _quiet(transformers):  # mtl checks what loaded itself, below
            model, info = transformers.AutoModel.from_pretrained(
                path, config=config, attn_implementation=attention, output_loading_info=True,
                ignore_mismatched_sizes=True,
            )  # fmt: skip
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"{path}: {' '.join(str(e).split())[:500]}") from None
    missing = sorted(k for k in info["missing_keys"] if not k.startswith("pooler."))
    mismatched = [f"{key} is {tuple(theirs)}, the config implies {tuple(ours)}"
                  for key, theirs, ours in sorted(info["mismatched_keys"])]  # fmt: skip
    if missing or mismatched:
        raise CheckpointError(
            f"{path}: the weights do not match config.json; missing: "
            f"{', '.join(missing[:5]) or 'none'}; of another shape: "
            f"{'; '.join(mismatched[:3]) or 'none'}"
        )
    encoder = HFEncoder(model.float(), pooling)
    encoder.mlm_weights = mlm_head_weights(path, encoder)
    return encoder


@contextmanager
def _quiet(transformers: ModuleType) -> Iterator[None]:
    """No loading report (it calls the dropped pooler missing and the masked-LM head
    unexpected) and no progress bar from transformers, for one call."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def mlm_head_weights(path: Path, encoder: HFEncoder) -> dict[str, Tensor]:
    """The checkpoint's masked-LM head in MaskedLMHead's names, if it has one of a known layout
    whose shapes fit the encoder (else {}: the head starts fresh)."""
    state = _head_tensors(path, {k for head in MLM_HEADS for k in head})
    shapes = {"dense.weight": (encoder.word_embeddings.embedding_dim, encoder.hidden_size),
              "bias": (encoder.cfg.vocab_size,)}  # fmt: skip
    for head in MLM_HEADS:
        if all(k in state for k in head):
            found = {ours: state[theirs].float() for theirs, ours in head.items()}
            if all(found[k].shape == shape for k, shape in shapes.items()):
                return found
    return {}


def _head_tensors(path: Path, keys: set[str]) -> dict[str, Tensor]:
    """Those of `keys` that the checkpoint's weights file holds (old LayerNorm gamma/beta
    names too); a safetensors file is read for them alone."""
    file = path / "model.safetensors"
    if file.is_file():
        with safe_open(str(file), "pt") as f:
            names = {k: _head_name(k, keys) for k in f.keys()}  # noqa: SIM118
            return {ours: f.get_tensor(k) for k, ours in names.items() if ours}
    file = path / "pytorch_model.bin"
    if file.is_file():
        state = load_data(file)
        return {ours: v for k, v in state.items() if (ours := _head_name(k, keys))}
    return {}


def _head_name(key: str, keys: set[str]) -> str | None:
    key = key.replace(".gamma", ".weight").replace(".beta", ".bias")
    return key if key in keys else None
