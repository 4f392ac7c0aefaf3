"""Task kinds beyond one label per text: multi-label, tagging, masked LM, and text pairs."""

import json
from pathlib import Path

import pytest
import torch

from mtl.data.batching import collate
from mtl.data.cache import tokenize
from mtl.data.loading import DataConfig, TaskDataset, load_task
from mtl.errors import ConfigError, DataError
from mtl.pretrained import resolve_pretrained
from mtl.tasks import (
    MaskedLMTask,
    MultilabelTask,
    SpanF1,
    TaskSpec,
    parse_task_specs,
)
from mtl.tasks.metrics import spans
from mtl.tokenizer import load_tokenizer, pad_id

TINY = ["encoder=tiny", "trainer.max_steps=40", "trainer.val_check_interval=20"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_pretrained("minilm"), max_length=128)


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# ---- masked LM ------------------------------------------------------------------------------


def mlm_dataset(tokenizer, texts: list[str], seed: int = 0) -> TaskDataset:
    spec = TaskSpec(type="mlm", file="unused.txt")
    task = MaskedLMTask.fit("mlm", spec, [None] * len(texts), tokenizer)
    tokens = tokenize(tokenizer, texts, None)
    return TaskDataset(task, tokens, torch.zeros(len(texts)), pad_id(tokenizer), seed)


def test_masking_follows_bert_rates_and_spares_special_tokens(tokenizer):
    texts = [f"Die Verwaltung prüft den Antrag Nummer {i} sehr gründlich und sorgfältig." * 3
             for i in range(200)]  # fmt: skip
    dataset = mlm_dataset(tokenizer, texts)
    rows = list(range(len(texts)))
    before = collate(dataset.tokens, rows, dataset.pad_id)["input_ids"]
    part = dataset.batch(rows, "step:7")
    labels, after = part["labels"], part["input_ids"]
    chosen = labels != -100
    maskable = part["attention_mask"].bool() & ~torch.isin(
        before, torch.tensor(dataset.task.special_ids)
    )
    assert chosen.any(dim=1).all()  # at least one position per text
    assert not (chosen & ~maskable).any()  # never a special token or padding
    assert torch.equal(labels[chosen], before[chosen])  # the targets are the original pieces
    assert torch.equal(after[~chosen], before[~chosen])  # the rest is untouched
    assert 0.14 < chosen.sum() / maskable.sum() < 0.16
    masked = (after[chosen] == dataset.task.mask_id).float().mean()
    kept = (after[chosen] == before[chosen]).float().mean()
    assert 0.77 < masked < 0.83 and 0.08 < kept < 0.12  # 80% [MASK], 10% kept, 10% random
    again = dataset.batch(rows, "step:7")  # the same batch masks the same way (exact resume)
    assert torch.equal(again["input_ids"], after) and torch.equal(again["labels"], labels)
    assert not torch.equal(dataset.batch(rows, "step:8")["labels"], labels)  # next step: new


def test_mlm_rows_with_nothing_to_mask_are_bad_rows(tokenizer, tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("Ein Satz.\n\n[CLS] [SEP]\nNoch ein Satz.\nBerdenggung\u2639\n",
                    encoding="utf-8")  # fmt: skip
    spec = TaskSpec(type="mlm", files={"train": str(path), "val": str(path)})
    with pytest.raises(DataError, match=r"texts\.txt:3: column 'text': no word piece to mask"):
        load_task("mlm", spec, tokenizer, DataConfig(), seed=0)
    data = load_task("mlm", spec, tokenizer, DataConfig(on_bad_row="skip"), seed=0)
    # line 5 is one word the vocabulary lacks: [UNK] is masked like any piece, as in BERT
    assert len(data.splits["train"]) == 3 and data.skipped == 2  # once per split


@pytest.mark.slow  # in CI's slow run, with the other task kinds' longer CLI runs
def test_mlm_alone_trains_and_lowers_the_held_out_loss(tmp_path, mtl_train):
    result = mtl_train("task=[demo_mlm]", *TINY, "optimizer.lr=1e-3",
                       f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    history = metrics_of(tmp_path / "run")["history"]
    losses = [e["val/demo_mlm/loss"] for e in history]
    assert losses[-1] < losses[0] - 0.5  # from ln(vocabulary) = 10.3 for a random head
    assert history[-1]["val/score"] == history[-1]["val/demo_mlm/accuracy"]  # alone: scored


def test_mlm_beside_a_labelled_task_is_not_scored():
    specs = parse_task_specs({
        "mlm": {"type": "mlm", "file": "a.txt"},
        "score": {"type": "regression", "file": "b.csv"},
    })  # fmt: skip
    assert (specs["mlm"].score_weight, specs["score"].score_weight) == (0.0, 1.0)
    with pytest.raises(ConfigError, match="at least one task needs a score_weight > 0"):
        parse_task_specs({"mlm": {"type": "mlm", "file": "a.txt", "score_weight": 0}})


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
def test_mlm_beside_regression_resumes_bit_for_bit(tmp_path, mtl_train):
    args = ["task=[demo_complexity,demo_mlm]", "encoder=tiny", "trainer.max_steps=8",
            "trainer.val_check_interval=4"]  # fmt: skip
    snapshots = [
        "+callbacks.snapshots._target_=pytorch_lightning.callbacks.ModelCheckpoint",
        "+callbacks.snapshots.dirpath=${paths.output_dir}/snapshots",
        "+callbacks.snapshots.every_n_train_steps=3",
        "+callbacks.snapshots.save_top_k=-1",
    ]
    full = mtl_train(*args, *snapshots, f"hydra.run.dir={tmp_path}/full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    snapshot = next((tmp_path / "full" / "snapshots").glob("*step=3.ckpt"))
    resumed = mtl_train(*args, f"resume='{snapshot}'", f"hydra.run.dir={tmp_path}/resumed",
                        cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    load = lambda run: torch.load(run / "checkpoints/last.ckpt", weights_only=True)["state_dict"]  # noqa: E731
    a, b = load(tmp_path / "full"), load(tmp_path / "resumed")
    assert any("heads.demo_mlm" in key for key in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---- multi-label ----------------------------------------------------------------------------


def test_multilabel_f1_matches_a_hand_count():
    spec = TaskSpec(type="multilabel", file="x.csv", labels=["a", "b", "c"])
    task = MultilabelTask.fit("m", spec, [("a",), ("b", "c")])
    targets = torch.tensor([task.encode(y) for y in [("a",), ("a", "b"), (), ("c",)]])
    logits = torch.tensor([[5.0, -5, -5], [5, -5, 5], [-5, 5, -5], [-5, -5, 5]])
    # predicted: {a}, {a, c}, {b}, {c}; gold: {a}, {a, b}, {}, {c}
    # a: tp 2; b: fp 1, fn 1; c: tp 1, fp 1 -> F1 a = 1, b = 0, c = 2/3
    metrics = task.metrics()
    task.update_metrics(metrics, logits, targets)
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["f1_macro"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert values["f1_micro"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))  # tp 3, fp 2, fn 1


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
def test_multilabel_run_and_predictions_through_the_cli(tmp_path, mtl_train, run_module):
    result = mtl_train("task=[demo_multilabel]", *TINY, f"hydra.run.dir={tmp_path}/run",
                       cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    final = metrics_of(tmp_path / "run")["final"]
    assert {"val/demo_multilabel/f1_macro", "val/demo_multilabel/f1_micro"} <= final.keys()
    texts = "Die Pizza war gut und die Bedienung war schrecklich.\nWir waren gestern dort.\n"
    out = run_module("mtl.predict", str(tmp_path / "run"), "--input", "-", cwd=tmp_path,
                     input=texts)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 2
    for row in rows:
        probs = {k[len("demo_multilabel_prob_") :]: v for k, v in row.items() if "_prob_" in k}
        assert list(probs) == ["food", "service", "price", "ambience"]
        above = [label for label, p in probs.items() if p > 0.5]
        assert row["demo_multilabel"] == ";".join(above)
    exported = run_module("mtl.export", str(tmp_path / "run"), str(tmp_path / "model"),
                          cwd=tmp_path)  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    card = (tmp_path / "model" / "README.md").read_text()
    assert "| demo_multilabel | multilabel | any of `food`, `service`, `price`" in card


# ---- tagging --------------------------------------------------------------------------------


def test_spans_read_bio_as_seqeval_does():
    assert spans(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert spans(["I-ORG", "I-ORG", "B-ORG"]) == {("ORG", 0, 2), ("ORG", 2, 3)}
    assert spans(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}


def test_span_f1_counts_exact_entities_and_skips_ignored_pieces():
    labels = ("O", "B-PER", "I-PER", "B-LOC")
    gold = torch.tensor([[-100, 1, 2, -100, 0, 3, -100]])  # [CLS] Anna Weber ##s in Köln [SEP]
    pred = torch.tensor([[0, 1, 0, 2, 0, 3, 0]])  # the person cut short; a stray I-PER ignored
    metric = SpanF1(labels, -100)
    metric.update(pred, gold)  # predicted: PER(1 word), LOC; gold: PER(2 words), LOC
    assert float(metric.compute()) == pytest.approx(2 * 1 / (2 + 2))


def test_tags_sit_on_each_words_first_piece(tokenizer, tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("Die O\nBezirksverwaltungsbehörde B-ORG\ntagt O\n.\tO\n\nAnna B-PER\n",
                    encoding="utf-8")  # fmt: skip
    spec = TaskSpec(type="tagging", files={"train": str(path), "val": str(path)})
    data = load_task("ner", spec, tokenizer, DataConfig(), seed=0)
    task, dataset = data.task, data.splits["train"]
    part = dataset.batch([0])
    pieces = tokenizer.encode(["Die", "Bezirksverwaltungsbehörde", "tagt", "."],
                              is_pretokenized=True)  # fmt: skip
    assert part["input_ids"][0].tolist() == pieces.ids
    tags = [task.labels[t] if t != -100 else None for t in part["labels"][0].tolist()]
    first = [w is not None and (i == 0 or pieces.word_ids[i - 1] != w)
             for i, w in enumerate(pieces.word_ids)]  # fmt: skip
    assert [t is not None for t in tags] == first
    assert [t for t in tags if t] == ["O", "B-ORG", "O", "O"]
    assert len(pieces.ids) > 6  # the long word really is several pieces


def test_words_cut_off_by_max_length_are_counted_never_misaligned(tmp_path, caplog):
    words = [f"Wort{i}" for i in range(40)]
    tags = ["B-LOC" if i % 5 == 0 else "O" for i in range(40)]
    path = tmp_path / "train.conll"
    sentence = "".join(f"{w} {t}\n" for w, t in zip(words, tags, strict=True))
    path.write_text(f"{sentence}\n{sentence}")  # two sentences: a validation split needs 2
    spec = TaskSpec(type="tagging", files={"train": str(path), "val": str(path)})
    short = load_tokenizer(resolve_pretrained("minilm"), max_length=16)
    with caplog.at_level("WARNING"):
        data = load_task("ner", spec, short, DataConfig(), seed=0)
    part = data.splits["train"].batch([0])
    kept = [data.task.labels[t] for t in part["labels"][0].tolist() if t != -100]
    assert kept == tags[: len(kept)] and 0 < len(kept) < 40  # the first words, in order
    assert f"{2 * (40 - len(kept))} words cut off at max_length" in caplog.text


def test_a_conll_line_without_a_tag_names_the_line(tokenizer, tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("Die O\nStadt B-LOC\n\nAnna\nlacht O\n", encoding="utf-8")
    spec = TaskSpec(type="tagging", files={"train": str(path), "val": str(path)})
    with pytest.raises(DataError, match=r"train\.conll:4: 'Anna' has a token but no tag"):
        load_task("ner", spec, tokenizer, DataConfig(), seed=0)


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
def test_tagging_run_through_the_cli_and_its_limits(tmp_path, mtl_train, run_module):
    result = mtl_train("task=[demo_tagging]", *TINY, f"hydra.run.dir={tmp_path}/run",
                       cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    history = metrics_of(tmp_path / "run")["history"]
    accuracy = [e["val/demo_tagging/accuracy"] for e in history]
    assert accuracy[-1] > accuracy[0]
    out = run_module("mtl.predict", str(tmp_path / "run"), "--input", "-",
                     "--tasks", "demo_tagging", cwd=tmp_path, input="Anna lacht.\n")  # fmt: skip
    assert out.returncode != 0
    assert "task 'demo_tagging' is tagging: only tasks with a label per text" in out.stderr
    exported = run_module("mtl.export", str(tmp_path / "run"), str(tmp_path / "model"),
                          cwd=tmp_path)  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (
        "| demo_tagging | tagging | a tag per word: `" in (tmp_path / "model/README.md").read_text()
    )
    cached = mtl_train("task=[demo_tagging]", "transfer=feature_extraction", *TINY,
                       cwd=tmp_path)  # fmt: skip
    assert cached.returncode != 0
    assert "needs every token's state" in cached.stderr


# ---- text pairs -----------------------------------------------------------------------------


def test_pair_segments_and_both_orders_stay_in_one_split(tokenizer, tmp_path):
    blocks = [(f"Ein langer Satz Nummer {i} mit vielen Wörtern.", f"Satz {i}.") for i in range(30)]
    path = tmp_path / "ADV-ELE.txt"
    path.write_text("".join(f"{a}\n{b}\n*******\n" for a, b in blocks), encoding="utf-8")
    spec = TaskSpec(
        type="classification", file=str(path), format="simpler_pairs",
        text_pair_column="text_pair", label_column="simpler",
    )  # fmt: skip
    spec.split.group_column = "pair"
    data = load_task("pairs", spec, tokenizer, DataConfig(), seed=0)
    sep = tokenizer.token_to_id("[SEP]")
    pairs_by_split = {}
    for split, dataset in data.splits.items():
        part = dataset.batch(list(range(len(dataset))))
        for ids, types, mask in zip(part["input_ids"], part["token_type_ids"],
                                    part["attention_mask"], strict=True):  # fmt: skip
            ids, types = ids[: int(mask.sum())].tolist(), types[: int(mask.sum())].tolist()
            end = ids.index(sep)  # [CLS] first [SEP] second [SEP]
            assert types == [0] * (end + 1) + [1] * (len(ids) - end - 1)
            pair = frozenset({tuple(ids[1:end]), tuple(ids[end + 1 : -1])})
            pairs_by_split.setdefault(split, []).append(pair)
    assert sum(len(p) for p in pairs_by_split.values()) == 60  # each pair in both orders
    train, val = set(pairs_by_split["train"]), set(pairs_by_split["val"])
    assert train and val and not train & val  # a pair's two orders share one split
    for pairs in pairs_by_split.values():
        assert all(pairs.count(p) == 2 for p in pairs)
