"""Encoders beyond BERT (`encoder.backend`, mtl/hf_encoder.py): tiny random RoBERTa, XLM-R,
ELECTRA, DeBERTa-v2 (v3's layout), DistilBERT and ModernBERT checkpoints, built here with
transformers' config classes (nothing is downloaded), read through transformers' AutoModel
behind mtl's Encoder interface: they train, predict and export through the commands, with
layer groups, truncation, freezing, layer-wise decay, gradual unfreezing, cached features, the
masked-LM head and exact resume; `auto` reads a BERT natively."""

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
from probes import read_trace
from test_vocabulary import demo_sentences, xlmr_style_tokenizer

from mtl.encoder import Bert, BertConfig
from mtl.errors import CheckpointError, ConfigError
from mtl.heads import MaskedLMHead
from mtl.pretrained import EncoderConfig, build_encoder, encoder_from_description, load_encoder
from mtl.tokenizer import load_tokenizer, pad_id
from mtl.trained import load

transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()

SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64}  # fmt: skip
UNIGRAM = ("roberta", "xlm-roberta", "deberta-v2")  # XLM-R-style pieces; the others: WordPiece


def tiny_model(name: str, vocab: int, pad: int):
    """A random transformers model of the architecture `name`, saved as its users find it:
    XLM-R and DistilBERT with their masked-LM heads, ELECTRA as a discriminator."""
    t = transformers
    ids = {"pad_token_id": pad, "bos_token_id": 0, "eos_token_id": 2}
    if name in ("roberta", "xlm-roberta"):  # positions numbered from pad + 1: 66 for 64 tokens
        cfg = {**SIZE, **ids, "vocab_size": vocab, "type_vocab_size": 1,
               "max_position_embeddings": 66}  # fmt: skip
        if name == "roberta":
            return t.RobertaModel(t.RobertaConfig(**cfg))
        return t.XLMRobertaForMaskedLM(t.XLMRobertaConfig(**cfg))
    if name == "electra":  # 16-wide embeddings projected to 32
        config = t.ElectraConfig(**SIZE, vocab_size=vocab, embedding_size=16,
                                 max_position_embeddings=64, pad_token_id=pad)  # fmt: skip
        return t.ElectraForPreTraining(config)
    if name == "deberta-v2":  # v3's layout: relative positions only, no segment embedding
        config = t.DebertaV2Config(
            **SIZE, vocab_size=vocab, pad_token_id=pad, max_position_embeddings=64,
            relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"],
            type_vocab_size=0, norm_rel_ebd="layer_norm", max_relative_positions=-1,
            position_buckets=16, share_att_key=True,
        )  # fmt: skip
        return t.DebertaV2Model(config)
    if name == "distilbert":
        config = t.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=2,
                                    hidden_dim=64, max_position_embeddings=64, pad_token_id=pad)  # fmt: skip
        return t.DistilBertForMaskedLM(config)
    assert name == "modernbert"
    special = {"bos_token_id": 101, "eos_token_id": 102, "cls_token_id": 101,
               "sep_token_id": 102}  # fmt: skip
    config = t.ModernBertConfig(**SIZE, vocab_size=vocab, pad_token_id=pad, **special,
                                max_position_embeddings=64, global_attn_every_n_layers=2,
                                local_attention=8)  # fmt: skip
    return t.ModernBertModel(config)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, minilm_dir):
    """hf_dir(name) -> a pretrained directory (config.json, model.safetensors, tokenizer) of
    a tiny random model of that architecture; built once per module."""
    built: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in built:
            path = tmp_path_factory.mktemp(name)
            if name in UNIGRAM:
                xlmr_style_tokenizer().save(str(path / "tokenizer.json"))
            else:
                for file in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
                    shutil.copy(minilm_dir / file, path)
            tokenizer = load_tokenizer(path, 64)
            pad = tokenizer.token_to_id("<pad>" if name in UNIGRAM else "[PAD]")
            torch.manual_seed(0)
            tiny_model(name, tokenizer.get_vocab_size(), pad).save_pretrained(path)
            built[name] = path
        return built[name]

    return make


def batch(path: Path) -> dict[str, torch.Tensor]:
    """Two text pairs of different lengths, padded."""
    tokenizer = load_tokenizer(path, 64)
    tokenizer.enable_padding(pad_id=pad_id(tokenizer))
    encoded = tokenizer.encode_batch([("Der Tisch ist rot.", "Ja."),
                                      ("Ein Satz, der länger ist als der.", "Nein, ist er nicht.")])  # fmt: skip
    return {
        "input_ids": torch.tensor([e.ids for e in encoded]),
        "attention_mask": torch.tensor([e.attention_mask for e in encoded]),
        "token_type_ids": torch.tensor([e.type_ids for e in encoded]),
    }


# ---- the Encoder interface on every architecture ---------------------------------------------


ALL = ["roberta", "xlm-roberta", "electra", "deberta-v2", "distilbert", "modernbert"]


@pytest.mark.parametrize("name", ALL)
def test_layer_groups_truncation_freezing_and_the_mlm_head(name, hf_dir):
    path = hf_dir(name)
    encoder = load_encoder(path).eval()
    assert encoder.backend == "hf" and encoder.cfg.to_hf()["model_type"] == name
    assert encoder.cfg.max_position == 64 and encoder.hidden_size == 32
    groups = encoder.layer_groups()
    assert len(groups) == 3
    ids = [id(p) for group in groups for p in group]
    assert sorted(ids) == sorted({id(p) for p in encoder.parameters()})  # each once, all
    assert id(encoder.word_embeddings.weight) in {id(p) for p in groups[0]}
    beside = {"deberta-v2": ("encoder.rel_embeddings", 0), "modernbert": ("final_norm", 2)}
    if name in beside:  # shared relative positions: with the embeddings; a top norm: on top
        module, group = beside[name]
        params = encoder.model.get_submodule(module).parameters()
        assert {id(p) for p in params} <= {id(p) for p in groups[group]}

    x = batch(path)
    out = encoder(**x)
    assert out.hidden.shape == (*x["input_ids"].shape, 32) and out.pooled.shape == (2, 32)

    head = MaskedLMHead(encoder)
    stored = encoder.mlm_weights  # the checkpoint's masked-LM head, where it has one
    assert bool(stored) == (name in ("xlm-roberta", "distilbert"))
    for key, value in stored.items():
        assert torch.equal(head.state_dict()[key], value), key
    labels = torch.full_like(x["input_ids"], -100)
    labels[:, 1] = 5
    assert head(out, encoder, {"labels": labels}).shape == (2, encoder.cfg.vocab_size)

    encoder.truncate(1)  # encoder.keep_layers=1: rebuilt from its description, weights alike
    rebuilt = encoder_from_description(encoder.cfg.to_hf(), "test").eval()
    rebuilt.load_state_dict(encoder.state_dict())
    assert rebuilt.cfg.num_layers == 1 and len(rebuilt.layer_groups()) == 2
    assert torch.allclose(rebuilt(**x).pooled, encoder(**x).pooled, atol=1e-6)

    encoder.freeze(embeddings=True, layers=1)
    assert not any(p.requires_grad for p in encoder.parameters())


@pytest.mark.parametrize(
    ("model_class", "dense"),
    [("ElectraForMaskedLM", "generator_predictions.dense"),  # a generator: 16-wide embeddings
     ("DebertaV2ForMaskedLM", "cls.predictions.transform.dense")],
)  # fmt: skip
def test_a_checkpoints_masked_lm_head_is_kept(model_class, dense, tmp_path):
    config_class = (
        transformers.ElectraConfig if "Electra" in model_class else transformers.DebertaV2Config
    )
    extra = {"embedding_size": 16} if "Electra" in model_class else {}
    model = getattr(transformers, model_class)(config_class(**SIZE, vocab_size=50, **extra))
    model.save_pretrained(tmp_path)
    head = MaskedLMHead(load_encoder(tmp_path))
    theirs = model.state_dict()
    assert torch.equal(head.dense.weight, theirs[f"{dense}.weight"])
    assert head.bias.shape == (50,) and head.norm.weight.shape == (extra.get("embedding_size", 32),)


def test_auto_reads_bert_natively_and_hf_reads_it_alike(tmp_path, hf_dir):
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=2,
                     intermediate_size=64, max_position=64, pooling="cls")  # fmt: skip
    torch.manual_seed(0)
    Bert(cfg).save_pretrained(tmp_path)
    native, hf = load_encoder(tmp_path).eval(), load_encoder(tmp_path, "hf").eval()
    assert (native.backend, hf.backend) == ("native", "hf")
    assert hf.cfg.pooling == "cls"  # mtl's key in config.json
    ids = torch.randint(1, 100, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    a, b = native(ids, mask), hf(ids, mask)
    assert torch.allclose(a.pooled, b.pooled, atol=1e-5)
    assert torch.allclose(a.hidden[mask.bool()], b.hidden[mask.bool()], atol=1e-5)
    sizes = [[p.numel() for p in g] for g in native.layer_groups()]
    assert [sum(s) for s in sizes] == [sum(p.numel() for p in g) for g in hf.layer_groups()]

    with pytest.raises(
        CheckpointError, match="model_type is 'roberta'.*encoder.backend=auto or hf"
    ):
        load_encoder(hf_dir("roberta"), "native")


def test_weights_that_do_not_fit_config_json_are_named(hf_dir, tmp_path):
    path = shutil.copytree(hf_dir("roberta"), tmp_path / "roberta")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    shape = "encoder.layer.0.intermediate.dense.bias is (64,), the config implies (48,)"
    with pytest.raises(
        CheckpointError, match=re.escape(f"missing: none; of another shape: {shape}")
    ):
        load_encoder(path)
    (path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(
        CheckpointError, match=r"do not match config.json; missing: encoder\.layer\.2\."
    ):
        load_encoder(path)


def test_a_decoder_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match="'gpt2' is not an encoder-only architecture"):
        load_encoder(tmp_path)


def test_without_transformers_the_error_names_the_extra(hf_dir, mtl_train, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers fails
    result = mtl_train(f"encoder.pretrained={hf_dir('roberta')}", "encoder.max_length=64",
                       f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "which is not installed; install it with: pip install -e '.[hf]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_backend_hf_needs_a_pretrained_encoder_and_init_from_keeps_its_backend(hf_dir):
    with pytest.raises(
        ConfigError, match="encoder.backend: must be native or auto when training from scratch"
    ):
        EncoderConfig(pretrained=None, backend="hf").check()
    path = hf_dir("electra")
    start = (load_encoder(path), load_tokenizer(path, 64))
    encoder, _ = build_encoder(EncoderConfig(init_from="run", pooling="cls", max_length=64), start)
    assert encoder.backend == "hf" and encoder.cfg.pooling == "cls"
    for a, b in zip(encoder.state_dict().values(), start[0].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(
        ConfigError,
        match="encoder.backend=native, but encoder.init_from=run was trained with the hf backend",
    ):
        build_encoder(EncoderConfig(init_from="run", backend="native", max_length=64), start)


# ---- through the commands --------------------------------------------------------------------

RUNS = {  # each architecture trains with another of the features that use the layer groups
    "roberta": ["task=[demo_complexity,demo_sentiment]"],
    "xlm-roberta": ["task=[demo_complexity,demo_mlm]"],  # its checkpoint's MLM head
    "electra": [
        "task=[demo_complexity,demo_mlm]",
        "transfer=gradual_unfreezing",
        "transfer.unfreeze_every=1",
    ],  # fmt: skip
    "deberta-v2": [
        "task=[demo_complexity,demo_sentiment]",
        "encoder.keep_layers=1",
        "encoder.freeze_embeddings=true",
        "transfer=layer_decay",
    ],  # fmt: skip
    "distilbert": ["task=[demo_complexity]", "transfer=feature_extraction"],
    "modernbert": ["task=[demo_complexity,demo_mlm]", "encoder.pooling=cls"],  # slow: below
}


SHORT = ["encoder.max_length=64", "trainer.max_steps=2", "trainer.val_check_interval=2",
         "+trainer.limit_val_batches=1"]  # fmt: skip


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n == "modernbert" else []) for n in RUNS]
)
def test_an_architecture_trains_predicts_and_exports(name, hf_dir, mtl_train, run_module, tmp_path):
    run, export = tmp_path / "run", tmp_path / "export"
    result = mtl_train(*RUNS[name], f"encoder.pretrained={hf_dir(name)}", *SHORT,
                       f"hydra.run.dir={run}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    encoder = load(run).model.encoder
    assert encoder.backend == "hf" and encoder.cfg.to_hf()["model_type"] == name
    assert encoder.cfg.num_layers == (1 if name == "deberta-v2" else 2)

    result = run_module("mtl.export", str(run), str(export), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((export / "config.json").read_text())
    assert (config["model_type"], config["mtl_backend"]) == (name, "hf")
    assert f"One shared encoder ({name})" in (export / "README.md").read_text()
    theirs = transformers.AutoModel.from_pretrained(export).eval()  # the encoder alone
    x = batch(export)
    kept = {k: v for k, v in x.items() if k != "token_type_ids" or encoder.segments}
    with torch.no_grad():
        expected = theirs(**kept).last_hidden_state
        assert torch.allclose(encoder(**x).hidden, expected, atol=1e-5)

    texts = tmp_path / "sentences.txt"
    texts.write_text("\n".join(demo_sentences()[:16]) + "\n", encoding="utf-8")
    outputs = {}
    for source in (run, export):
        out = tmp_path / f"{source.name}.jsonl"
        result = run_module("mtl.predict", str(source), "--input", str(texts), "--output",
                            str(out), cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[source.name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(outputs["run"]) == 16
    for a, b in zip(outputs["run"], outputs["export"], strict=True):
        assert a["demo_complexity"] == pytest.approx(b["demo_complexity"], abs=1e-5)


@pytest.mark.slow  # two more runs; the native encoder's resume is in the default set
def test_an_hf_run_resumes_exactly(hf_dir, mtl_train, tmp_path):
    common = [
        "task=[demo_complexity,demo_mlm]", f"encoder.pretrained={hf_dir('xlm-roberta')}",
        "encoder.max_length=64", "trainer.max_steps=4", "trainer.val_check_interval=2",
        "+trainer.limit_val_batches=1", "+callbacks.trace._target_=probes.BatchTrace",
        "+callbacks.snapshots._target_=pytorch_lightning.callbacks.ModelCheckpoint",
        "+callbacks.snapshots.dirpath=${paths.output_dir}/snapshots",
        "+callbacks.snapshots.every_n_train_steps=2", "+callbacks.snapshots.save_top_k=-1",
    ]  # fmt: skip
    full = mtl_train(*common, f"+callbacks.trace.path={tmp_path}/full_trace",
                     f"hydra.run.dir={tmp_path}/full", cwd=tmp_path)  # fmt: skip
    assert full.returncode == 0, full.stderr[-3000:]
    snapshot = next((tmp_path / "full" / "snapshots").glob("*step=2.ckpt"))
    resumed = mtl_train(*common, f"resume='{snapshot}'", f"+callbacks.trace.path={tmp_path}/trace",
                        f"hydra.run.dir={tmp_path}/resumed", cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    continued = read_trace(tmp_path / "trace")
    assert [r["step"] for r in continued] == [2, 3]
    assert continued == read_trace(tmp_path / "full_trace")[2:]  # same tasks and rows
    a, b = (load(tmp_path / run / "checkpoints" / "last.ckpt").model.state_dict()
            for run in ("full", "resumed"))  # fmt: skip
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bitwise
