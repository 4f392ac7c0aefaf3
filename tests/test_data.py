"""Reading, validating, splitting, caching and batching task data."""

import random

import pytest
import torch

from mtl.data.batching import bucketed_batches, collate, sorted_batches
from mtl.data.cache import tokenize_cached
from mtl.data.loading import DataConfig, OnBadRow, load_task
from mtl.data.readers import read_examples
from mtl.data.splits import split_indices
from mtl.errors import ConfigError, DataError
from mtl.pretrained import resolve_pretrained
from mtl.tasks import ClassificationTask, SplitSpec, TaskSpec, parse_task_specs
from mtl.tokenizer import load_tokenizer


def regression(**kw) -> TaskSpec:
    kw = {"file": "x", **kw}
    return TaskSpec(type="regression", text_column="text", label_column="y", **kw)


def classification(labels=("neg", "pos"), **kw) -> TaskSpec:
    kw = {"file": "x", **kw} if "files" not in kw else kw
    return TaskSpec(type="classification", labels=list(labels) if labels else None, **kw)


def read(path, spec, **kw):
    return read_examples(path, "t", spec, **kw)


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_reads_csv_tsv_jsonl(tmp_path):
    csv = write(tmp_path, "a.csv", 'text,y\n"Ein Satz, mit Komma",2.5\nZwei,3\n')
    tsv = write(tmp_path, "a.tsv", "text\ty\nit 's \"quoted\t1\n")
    jsonl = write(tmp_path, "a.jsonl", '{"text": "eins", "y": 4}\n\n{"text": "zwei", "y": 5.5}\n')
    assert read(csv, regression()).examples.texts == ["Ein Satz, mit Komma", "Zwei"]
    assert read(tsv, regression()).examples.texts == ["it 's \"quoted"]
    ex = read(jsonl, regression()).examples
    assert ex.labels == [4.0, 5.5] and ex.lines == [1, 3]


def test_cp1252_file_needs_its_encoding(tmp_path):
    path = write(tmp_path, "r.csv", "text,y\nDas „Wort“ – hier,2\n", encoding="cp1252")
    with pytest.raises(DataError, match=r"r\.csv:2: cannot decode .* utf-8.*encoding"):
        read(path, regression())
    ex = read(path, regression(encoding="cp1252")).examples
    assert ex.texts == ["Das „Wort“ – hier"]


@pytest.mark.parametrize(
    ("body", "task", "message"),
    [
        ("text,z\nhallo,1\n", regression, r"b\.csv:1: no column 'y' in the header"),
        ("text,y\nhallo,1\n  ,2\n", regression, r"b\.csv:3: column 'text': text is empty"),
        ("text,y\nhallo,abc\n", regression, r"b\.csv:2: column 'y': label 'abc' is not a number"),
        ("text,y\nhallo,nan\n", regression, r"b\.csv:2: column 'y': .*not a finite number"),
        ("text,y\nhallo,inf\n", regression, r"b\.csv:2: column 'y': .*not a finite number"),
        ("text,y\nhallo,9\n", lambda: regression(range=[1, 7]), r"b\.csv:2: .*outside the range"),
        ("text,y\nhallo\n", regression, r"b\.csv:2: column 'y': missing"),
        ("text,label\nhallo,meh\n", classification, r"b\.csv:2: column 'label': .*'meh' is not in"),
    ],
    ids=["no-column", "empty-text", "not-number", "nan", "inf", "range", "short-row", "label-set"],
)
def test_bad_rows_name_file_line_and_column(tmp_path, body, task, message):
    path = write(tmp_path, "b.csv", body)
    with pytest.raises(DataError, match=message):
        read(path, task())


def test_bad_json_line_names_line_and_character(tmp_path):
    path = write(tmp_path, "b.jsonl", '{"text": "a", "y": 1}\n{"text": "b", "y": \n')
    with pytest.raises(DataError, match=r"b\.jsonl:2: invalid JSON at character \d+"):
        read(path, regression())


def test_skip_counts_bad_rows(tmp_path):
    path = write(tmp_path, "s.csv", "text,y\ngut,1\n,2\nauch,x\nnoch,inf\nende,3\n")
    result = read(path, regression(), on_bad_row="skip")
    assert result.examples.texts == ["gut", "ende"]
    assert result.skipped == 3
    assert "s.csv:3" in result.first_skipped


def test_open_label_set_is_fitted_from_good_training_rows_only(tmp_path):
    path = write(tmp_path, "l.csv", "text,label\na,pos\n,neu\nb,neg\nc,pos\n")
    spec = classification(labels=None)
    result = read(path, spec, on_bad_row="skip")
    task = ClassificationTask.fit("sent", spec, result.examples.labels)
    assert task.labels == ("pos", "neg")
    assert [task.encode(label) for label in result.examples.labels] == [0, 1, 0]


def test_group_split_keeps_groups_together():
    groups = [str(i % 25) for i in range(1000)]
    splits = split_indices(1000, groups, SplitSpec(val_fraction=0.2, seed=3, group_column="g"))
    seen = {name: {groups[i] for i in rows} for name, rows in splits.items()}
    assert not seen["train"] & seen["val"]
    assert sorted(splits["train"] + splits["val"]) == list(range(1000))
    assert 0.2 <= len(splits["val"]) / 1000 < 0.2 + 40 / 1000  # at most one group over
    other = split_indices(1000, groups, SplitSpec(val_fraction=0.2, seed=4))
    assert splits == split_indices(1000, groups, SplitSpec(val_fraction=0.2, seed=3))
    assert other["val"] != splits["val"]


def test_bucketed_batches_cover_each_row_once_with_little_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(2000)]
    batches = bucketed_batches(lengths, 32, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(2000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    shuffled = list(range(2000))
    rng.shuffle(shuffled)
    naive = sum(
        len(b) * max(lengths[i] for i in b)
        for b in (shuffled[i : i + 32] for i in range(0, 2000, 32))
    )
    assert padded < 0.7 * naive  # bucketing removes most of random batching's padding
    assert [len(b) for b in sorted_batches(lengths, 64)][:-1] == [64] * 31


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_pretrained("minilm"), max_length=16)


def test_collate_pads_each_batch_to_its_longest_row(tokenizer):
    tokens, _ = tokenize_cached(tokenizer, ["kurz", "ein etwas längerer satz hier"], None, None)
    batch = collate(tokens, [0], pad_id=0)
    assert batch["input_ids"].shape == (1, int(tokens.lengths[0]))
    batch = collate(tokens, [0, 1], pad_id=0)
    assert batch["input_ids"].shape[1] == int(tokens.lengths.max())
    assert batch["attention_mask"].sum(1).tolist() == tokens.lengths.tolist()


def test_token_cache_is_reused_and_keyed_by_content(tmp_path, tokenizer, monkeypatch):
    texts, pairs = ["erster satz", "zweiter satz"], ["a", "b"]
    first, hit = tokenize_cached(tokenizer, texts, pairs, tmp_path)
    assert not hit and len(list(tmp_path.glob("*.safetensors"))) == 1

    def fail(*args):
        raise AssertionError("tokenizer called although the cache holds these texts")

    monkeypatch.setattr("mtl.data.cache.encode_batch", fail)
    again, hit = tokenize_cached(tokenizer, texts, pairs, tmp_path)
    assert hit and torch.equal(again.ids, first.ids) and torch.equal(again.type_ids, first.type_ids)
    monkeypatch.undo()
    _, hit = tokenize_cached(tokenizer, ["erster satz", "anderer satz"], pairs, tmp_path)
    assert not hit
    longer = load_tokenizer(resolve_pretrained("minilm"), max_length=8)
    _, hit = tokenize_cached(longer, texts, pairs, tmp_path)
    assert not hit  # another max_length is another key


def test_row_with_extra_fields_is_a_bad_row(tmp_path):
    path = write(tmp_path, "x.csv", "y,text\n1,Hallo, Welt\n2,gut\n")
    with pytest.raises(DataError, match=r"x\.csv:2: 3 fields but the header has 2"):
        read(path, regression())
    assert read(path, regression(), on_bad_row="skip").examples.texts == ["gut"]


def test_jsonl_keeps_unicode_line_separators_and_rejects_non_text(tmp_path):
    path = write(tmp_path, "u.jsonl", '{"text": "a\u2028b", "y": 1}\n{"text": "c", "y": 2}\n')
    ex = read(path, regression()).examples
    assert ex.texts == ["a\u2028b", "c"] and ex.lines == [1, 2]
    path = write(tmp_path, "l.jsonl", '{"text": ["a", "b"], "y": 1}\n')
    with pytest.raises(
        DataError, match=r"l\.jsonl:1: column 'text': expected a string or a number"
    ):
        read(path, regression())


def test_cache_key_separates_texts_unambiguously(tmp_path, tokenizer):
    from mtl.data.cache import cache_key

    assert cache_key(tokenizer, ["a\0b", "c"], None) != cache_key(tokenizer, ["a", "b\0c"], None)


def test_atomic_write_keeps_the_usual_file_mode(tmp_path):
    import os

    from mtl.io import atomic_write_text

    atomic_write_text(tmp_path / "m.json", "{}")
    plain = tmp_path / "plain"
    plain.write_text("{}")
    assert os.stat(tmp_path / "m.json").st_mode == os.stat(plain).st_mode
    assert not list(tmp_path.glob(".m.json.*"))


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"val_fraction": 0.0}, r"task\.cx\.split\.val_fraction: must be in \(0, 1\), got 0\.0"),
        (
            {"val_fraction": 0.6, "test_fraction": 0.5},
            r"task\.cx\.split: must be val_fraction \+ test_fraction < 1, got 0\.6 \+ 0\.5",
        ),
    ],
)
def test_split_settings_that_cannot_work_name_the_task(split, message):
    with pytest.raises(ConfigError, match=message):
        parse_task_specs({"cx": {"type": "regression", "file": "d.csv", "split": split}})


def test_a_split_too_small_names_the_task(tmp_path, tokenizer):
    path = write(tmp_path, "d.csv", "text,y\n" + "".join(f"satz {i},{i % 5}\n" for i in range(3)))
    spec = regression(file=str(path), split=SplitSpec(val_fraction=0.1))
    with pytest.raises(DataError, match=r"task\.cx: the val split has 1 rows \(at least 2 needed"):
        load_task("cx", spec, tokenizer, DataConfig(), seed=0)


def test_validation_label_unseen_in_training_is_a_bad_row(tmp_path, tokenizer):
    train = write(tmp_path, "train.csv", "text,label\na,pos\nb,neg\n")
    val = write(tmp_path, "val.csv", "text,label\nc,pos\nd,neu\ne,neg\n")
    spec = classification(labels=None, files={"train": str(train), "val": str(val)})
    with pytest.raises(DataError, match=r"val\.csv:3: column 'label': label 'neu' is not in"):
        load_task("sent", spec, tokenizer, DataConfig(), seed=0)
    data = load_task("sent", spec, tokenizer, DataConfig(on_bad_row=OnBadRow.skip), seed=0)
    assert data.skipped == 1 and data.splits["val"].targets.tolist() == [0, 1]
    assert data.task.labels == ("pos", "neg")
