"""Any vocabulary: an XLM-R-style SentencePiece (Unigram) tokenizer, whose <s> is id 0 and
<pad> id 1, trains, predicts, evaluates and exports through the commands; special tokens are
known by role; the text prefix travels with the model; pooling follows the checkpoint."""

import csv
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram
from tokenizers.trainers import UnigramTrainer

from mtl.data.cache import tokenize
from mtl.encoder import Bert, BertConfig
from mtl.predict import Predictor
from mtl.pretrained import EncoderConfig, build_encoder, resolve_pretrained
from mtl.tokenizer import SpecialTokens, load_tokenizer, save_tokenizer
from mtl.trained import load
from mtl.validation import typed

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
PREFIX = "query: "
EXTRA_ROWS = 11  # embedding rows beyond the tokenizer's pieces, as converted checkpoints have
TEXTS = [
    "Der Mann kauft leise schnell den Tisch.",
    "Die Öffnung der Finanzierungsbürgschaft erfolgt gemäß den Verwaltungsvorschriften.",
    "ok",
    "Zwei  Leerzeichen, ein Emoji 🙂 und ÆØÅ!",
]


def demo_sentences() -> list[str]:
    with (DEMO / "complexity" / "train.csv").open(encoding="utf-8", newline="") as f:
        return [row["sentence"] for row in csv.DictReader(f)]


def xlmr_style_tokenizer() -> Tokenizer:
    """SentencePiece Unigram pieces learnt from the demo sentences, laid out as XLM-R's:
    <s> <pad> </s> <unk> first, <mask> last, `<s> A </s>` and `<s> A </s></s> B </s>`."""
    tokenizer = Tokenizer(Unigram())
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = UnigramTrainer(
        vocab_size=600, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tokenizer.train_from_iterator(demo_sentences(), trainer)
    tokenizer.add_special_tokens(["<mask>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )  # fmt: skip
    return tokenizer


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory) -> Path:
    """A tiny random BERT (pad_token_id 1, `pooling: cls`) with that tokenizer, as a
    pretrained directory."""
    path = tmp_path_factory.mktemp("xlmr")
    tokenizer = xlmr_style_tokenizer()
    tokenizer.save(str(path / "tokenizer.json"))
    cfg = BertConfig(
        vocab_size=tokenizer.get_vocab_size() + EXTRA_ROWS, hidden_size=32, num_layers=2,
        num_heads=2, intermediate_size=64, max_position=64, pad_token_id=1, pooling="cls",
    )  # fmt: skip
    torch.manual_seed(0)
    Bert(cfg).save_pretrained(path)
    return path


def test_special_tokens_are_known_by_role(xlmr_dir, minilm_dir):
    xlmr = SpecialTokens.of(load_tokenizer(xlmr_dir, 64))
    mask = xlmr.mask.id if xlmr.mask else None
    assert [(t.token, t.id) for t in xlmr.roles().values()] == [
        ("<s>", 0), ("</s>", 2), ("<pad>", 1), ("<mask>", mask), ("<unk>", 3),
    ]  # fmt: skip
    assert xlmr.ids == (0, 1, 2, 3, mask)
    bert = SpecialTokens.of(load_tokenizer(minilm_dir, 64))
    assert {r: t.token for r, t in bert.roles().items()} == {
        "cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "mask": "[MASK]", "unk": "[UNK]",
    }  # fmt: skip


@pytest.mark.parametrize(
    "processor",
    [None, processors.RobertaProcessing(("</s>", 2), ("<s>", 0)),
     processors.Sequence([processors.ByteLevel(), processors.RobertaProcessing(("</s>", 2),
                                                                              ("<s>", 0))])],
    ids=["none", "roberta", "sequence"],
)  # fmt: skip
def test_what_begins_and_ends_a_text_is_read_from_any_post_processor(xlmr_dir, processor):
    tokenizer = load_tokenizer(xlmr_dir, 64)
    tokenizer.post_processor = processor
    special = SpecialTokens.of(tokenizer)
    assert (special.cls, special.sep) == (("<s>", 0), ("</s>", 2))


def test_the_prefix_is_no_word_of_a_tagged_sentence(minilm_dir):
    tokenizer, sentence = load_tokenizer(minilm_dir, 64), ["Anna wohnt in Berlin ."]
    plain = tokenize(tokenizer, sentence, None, words=True)
    prefixed = tokenize(tokenizer, sentence, None, words=True, prefix=PREFIX)
    added = len(prefixed.ids) - len(plain.ids)  # the prefix's pieces, after [CLS]
    assert added > 0 and prefixed.words[1 : 1 + added].tolist() == [-1] * added
    assert prefixed.words[1 + added :].tolist() == plain.words[1:].tolist()


def test_an_xlmr_style_vocabulary_trains_predicts_evaluates_and_exports(
    xlmr_dir, mtl_train, run_module, tmp_path
):
    run, export = tmp_path / "run", tmp_path / "export"
    result = mtl_train(
        "task=[demo_complexity,demo_sentiment,demo_mlm]", f"encoder.pretrained={xlmr_dir}",
        f"encoder.text_prefix='{PREFIX}'", "encoder.max_length=64", "trainer.max_steps=6",
        "trainer.val_check_interval=3", f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trained = load(run)
    special = SpecialTokens.of(trained.tokenizer)
    assert trained.text_prefix == PREFIX
    assert trained.model.encoder.cfg.pad_token_id == 1
    mlm = trained.tasks["demo_mlm"]
    never_masked = tuple(i for i in special.ids if i != special.unk.id)  # <unk> is maskable
    assert special.unk.id == 3 and (mlm.mask_id, mlm.special_ids) == (special.mask.id, never_masked)
    rows = trained.model.encoder.cfg.vocab_size
    assert trained.model.heads["demo_mlm"].bias.shape == (rows,)
    assert rows == trained.tokenizer.get_vocab_size() + EXTRA_ROWS

    evaluated = tmp_path / "val.json"
    result = run_module("mtl.evaluate", str(run), "--split", "val", "--output", str(evaluated),
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((run / "metrics.json").read_text())["best"]
    for key in ("val/demo_complexity/rmse", "val/demo_sentiment/accuracy", "val/demo_mlm/loss"):
        assert json.loads(evaluated.read_text())[key] == pytest.approx(recorded[key], abs=1e-4)

    result = run_module("mtl.export", str(run), str(export), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((export / "mtl.json").read_text())["info"]["text_prefix"] == PREFIX
    assert f'prefix `"{PREFIX}"`' in (export / "README.md").read_text()
    assert not (export / "vocab.txt").exists()
    config = json.loads((export / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert json.loads((export / "special_tokens_map.json").read_text()) == {
        "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>", "mask_token": "<mask>",
        "unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>",
    }  # fmt: skip
    assert_predict_encodes_as_transformers(export, PREFIX, pad=1)

    outputs = {}
    for name, model in (("run", run), ("export", export)):
        out = tmp_path / f"{name}.jsonl"
        result = run_module("mtl.predict", str(model), "--input", str(DEMO / "complexity/val.csv"),
                            "--output", str(out), cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    for a, b in zip(outputs["run"], outputs["export"], strict=True):
        assert a["demo_complexity"] == pytest.approx(b["demo_complexity"], abs=1e-5)


def assert_predict_encodes_as_transformers(export: Path, prefix: str, pad: int) -> None:
    """transformers.AutoTokenizer on the export, given `prefix` + text, gives the ids that
    mtl.predict feeds the encoder, for texts and for pairs (the prefix before the first)."""
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(str(export))
    predictor = Predictor.load(export)
    model = predictor.members[0].model
    encode, seen = model.encode, []

    def spy(batch: dict) -> object:
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"].bool(), strict=True):
            seen.append(ids[mask].tolist())
            assert (ids[~mask] == pad).all()
        return encode(batch)

    model.encode = spy
    try:
        for pairs in (None, TEXTS[::-1]):
            seen.clear()
            predictor.predict(TEXTS, pairs, batch_size=2)
            firsts = [prefix + text for text in TEXTS]
            expected = theirs(firsts, pairs, truncation=True, max_length=64)["input_ids"]
            assert sorted(seen) == sorted(expected), pairs
    finally:
        del model.encode


def test_e5s_tokenizer_as_mtl_saves_it_gives_transformers_the_ids_mtl_uses(
    tmp_path, e5_cache, monkeypatch
):
    """The real XLM-R vocabulary (multilingual-e5-small's 250,002 pieces), as an export saves
    it: AutoTokenizer, given the prefix, encodes as mtl does (texts and pairs)."""
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("MTL_CACHE", str(e5_cache))
    tokenizer = load_tokenizer(resolve_pretrained("multilingual_e5_small"), 128)
    save_tokenizer(tokenizer, tmp_path, lowercase=False)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    texts = [*TEXTS, "ｆｕｌｌｗｉｄｔｈ ﬁ", "日本語のテキスト", "x" * 300]
    for pairs in (None, texts[::-1]):
        ours = tokenize(tokenizer, texts, pairs, prefix=PREFIX)
        firsts = [PREFIX + text for text in texts]
        expected = theirs(firsts, pairs, truncation=True, max_length=128)["input_ids"]
        assert [ours.row(i)[0].tolist() for i in range(len(texts))] == expected


def compose_encoder(*overrides: str) -> EncoderConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides])
    return typed(cfg, "encoder", EncoderConfig)


def test_pooling_follows_the_checkpoint_unless_set(xlmr_dir, tmp_path):
    plain = tmp_path / "plain"  # a Hugging Face checkpoint: no `pooling` key of mtl's
    plain.mkdir()
    for file in ("tokenizer.json", "model.safetensors"):
        (plain / file).write_bytes((xlmr_dir / file).read_bytes())
    config = json.loads((xlmr_dir / "config.json").read_text())
    (plain / "config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                   if k != "pooling"}))  # fmt: skip
    for source, setting, pooling in [
        (xlmr_dir, None, "cls"), (xlmr_dir, "mean", "mean"), (plain, None, "mean"),
        (plain, "cls", "cls"),
    ]:  # fmt: skip
        overrides = [f"encoder.pretrained={source}", "encoder.max_length=64"]
        overrides += [f"encoder.pooling={setting}"] if setting else []
        encoder, _ = build_encoder(compose_encoder(*overrides))
        assert encoder.cfg.pooling == pooling, (source, setting)
