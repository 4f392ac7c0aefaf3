"""The committed demo data under data/demo/ and the generator that made it."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import pytest

from mtl.data import demo

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMITTED = REPO_ROOT / "data" / "demo"
FILES = [
    Path(task) / f"{split}.csv"
    for task in ("complexity", "sentiment")
    for split in ("train", "val")
]
SIZES = {"train": demo.TRAIN_ROWS, "val": demo.VAL_ROWS}
MORE_FILES = [  # the demo tasks of the other task kinds (multi-label, tagging)
    Path("aspects") / f"{split}.csv" for split in ("train", "val")
] + [Path("entities") / f"{split}.conll" for split in ("train", "val")]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    demo.main(["--out", str(out)])
    return out


def read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def pearson(xs: list[float], ys: list[float]) -> float:
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    var_x = sum((x - mean_x) ** 2 for x in xs)
    var_y = sum((y - mean_y) ** 2 for y in ys)
    return cov / math.sqrt(var_x * var_y)


def adjective_is_positive(sentence: str) -> bool:
    """Polarity of the final adjective of a one-clause review."""
    adjective = sentence.rstrip(".").split()[-1]
    assert adjective in demo.POSITIVE_ADJECTIVES + demo.NEGATIVE_ADJECTIVES, sentence
    return adjective in demo.POSITIVE_ADJECTIVES


def is_negated(sentence: str) -> bool:
    return any(word in sentence.split() for word in demo.NEGATION_WORDS)


@pytest.mark.parametrize("name", FILES + MORE_FILES, ids=str)
def test_default_seed_reproduces_committed_files(regenerated: Path, name: Path) -> None:
    assert (regenerated / name).read_bytes() == (COMMITTED / name).read_bytes()


def test_main_reports_files_and_row_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    demo.main(["--out", str(tmp_path), "--seed", "1"])
    printed = capsys.readouterr().out
    assert str(tmp_path / "complexity" / "train.csv") in printed
    assert "(2000 rows)" in printed and "(300 rows)" in printed
    for name in FILES:
        assert (tmp_path / name).read_bytes() != (COMMITTED / name).read_bytes()


@pytest.mark.parametrize("name", FILES, ids=str)
def test_committed_file_format(name: Path) -> None:
    raw = (COMMITTED / name).read_bytes()
    assert b"\r" not in raw and raw.endswith(b"\n")
    rows = read_rows(COMMITTED / name)
    header = ["sentence", "complexity" if name.parts[0] == "complexity" else "label"]
    assert rows[0] == header
    assert len(rows) - 1 == SIZES[name.stem]
    assert all(len(row) == 2 and row[0] for row in rows[1:])


@pytest.mark.parametrize("task", ["complexity", "sentiment"])
def test_train_and_val_sentences_are_disjoint(task: str) -> None:
    train = [row[0] for row in read_rows(COMMITTED / task / "train.csv")[1:]]
    val = [row[0] for row in read_rows(COMMITTED / task / "val.csv")[1:]]
    assert len(set(train)) == len(train) and len(set(val)) == len(val)
    assert not set(train) & set(val)


@pytest.mark.parametrize("split", ["train", "val"])
def test_complexity_scores_in_range_and_grow_with_length(split: str) -> None:
    rows = read_rows(COMMITTED / "complexity" / f"{split}.csv")[1:]
    scores = [float(score) for _, score in rows]
    assert all(demo.SCORE_MIN <= s <= demo.SCORE_MAX for s in scores)
    assert all(len(score.split(".")[1]) == 3 for _, score in rows)
    lengths = [float(len(sentence.split())) for sentence, _ in rows]
    assert pearson(lengths, scores) > 0.5


def test_complexity_raw_follows_documented_formula() -> None:
    simple = "Der Mann kauft das Buch."  # 5 words, no clause, no long word, active
    assert demo.complexity_raw(simple, 0, "active") == pytest.approx(1.0)
    nominal = "Die Veröffentlichung des Buches erfolgt durch den Mann, weil die Frau kauft."
    words, long_share = 12, 1 / 12
    expected = 1 + 0.08 * (words - 5) + 0.5 * 1 + 4.5 * long_share + 0.4 * 2
    assert demo.complexity_raw(nominal, 1, "nominal") == pytest.approx(expected)


def test_lexical_level_controls_long_words() -> None:
    rng = random.Random(0)
    simple = [demo.complexity_sentence(demo.Lexicon(rng, 0.0), "active", 1) for _ in range(50)]
    hard = [demo.complexity_sentence(demo.Lexicon(rng, 1.0), "active", 1) for _ in range(50)]
    assert max(demo.long_word_share(s) for s in simple) == 0.0
    assert min(demo.long_word_share(s) for s in hard) > 0.2


@pytest.mark.parametrize("split", ["train", "val"])
def test_sentiment_labels_are_binary_and_balanced(split: str) -> None:
    labels = [label for _, label in read_rows(COMMITTED / "sentiment" / f"{split}.csv")[1:]]
    assert set(labels) == {"negative", "positive"}
    assert 0.45 <= labels.count("positive") / len(labels) <= 0.55


def test_rule_label_negation_flips_polarity() -> None:
    assert demo.rule_label(adjective_positive=True, negated=False) == "positive"
    assert demo.rule_label(adjective_positive=True, negated=True) == "negative"
    assert demo.rule_label(adjective_positive=False, negated=False) == "negative"
    assert demo.rule_label(adjective_positive=False, negated=True) == "positive"


@pytest.mark.parametrize("positive", [True, False])
def test_negated_pattern_uses_opposite_adjective(positive: bool) -> None:
    rng = random.Random(0)
    for _ in range(200):
        sentence, label, pattern = demo.sentiment_example(rng, positive, "negated")
        assert pattern == "negated" and label == demo.polarity_label(positive)
        assert is_negated(sentence), sentence
        assert adjective_is_positive(sentence) != positive, sentence
        plain = demo.sentiment_example(rng, positive, "plain").sentence
        assert not is_negated(plain) and adjective_is_positive(plain) == positive, plain


def test_committed_negated_rows_mostly_flip_polarity() -> None:
    rows = read_rows(COMMITTED / "sentiment" / "train.csv")[1:]
    one_clause = [(s, label) for s, label in rows if " aber " not in s]
    negated = [(s, label) for s, label in one_clause if is_negated(s)]
    plain = [(s, label) for s, label in one_clause if not is_negated(s)]
    assert len(negated) > 300 and len(plain) > 900

    def agreement(pairs: list[tuple[str, str]], negation: bool) -> float:
        hits = [demo.rule_label(adjective_is_positive(s), negation) == lab for s, lab in pairs]
        return sum(hits) / len(hits)

    assert agreement(negated, negation=True) > 0.85
    assert agreement(plain, negation=False) > 0.85
    # Negation words occur with both labels, so they alone do not give the label away.
    share = sum(label == "positive" for _, label in negated) / len(negated)
    assert 0.4 < share < 0.6


def test_label_noise_rate_is_about_five_percent() -> None:
    rng = random.Random(0)
    flips = sum(demo.noisy_label(rng, "positive") == "negative" for _ in range(4000))
    assert 0.03 < flips / 4000 < 0.07


def test_unknown_pattern_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown sentiment pattern"):
        demo.sentiment_example(random.Random(0), True, "sarcastic")


@pytest.mark.parametrize("split", ["train", "val"])
def test_aspect_labels_name_exactly_the_aspects_mentioned(split: str) -> None:
    rows = read_rows(COMMITTED / "aspects" / f"{split}.csv")
    assert rows[0] == ["sentence", "aspects"] and len(rows) - 1 == SIZES[split]
    counts = {k: 0 for k in range(4)}
    for sentence, aspects in rows[1:]:
        words = set(sentence.rstrip(".").replace(",", "").split())
        mentioned = [a for a, nouns in demo.ASPECTS.items() if any(n.word in words for n in nouns)]
        assert aspects == ";".join(mentioned), sentence
        counts[len(mentioned)] += 1
    assert all(counts.values())  # reviews with none, one, two and three aspects


@pytest.mark.parametrize("split", ["train", "val"])
def test_entity_tags_are_well_formed_bio(split: str) -> None:
    text = (COMMITTED / "entities" / f"{split}.conll").read_text(encoding="utf-8")
    sentences = [block.split("\n") for block in text.strip("\n").split("\n\n")]
    assert len(sentences) == SIZES[split]
    kinds = set()
    for lines in sentences:
        tags = [line.split(" ")[1] for line in lines]
        for previous, tag in zip(["O", *tags], tags, strict=False):
            if tag.startswith("I-"):  # an entity continues only one of its own kind
                assert previous[2:] == tag[2:], lines
            kinds.add(tag)
    assert kinds == {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}
