"""Property-based: whatever bytes a data file holds, reading it either gives checked rows or
raises mtl's own error (with the file named), never a library exception."""

import csv
import io
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl.data.formats import read_lines
from mtl.data.readers import read_examples, read_table
from mtl.errors import DataError
from mtl.predict import write_rows
from mtl.tasks import TaskSpec

SPECS = {
    "regression": TaskSpec(type="regression", file="x", text_column="t", label_column="y"),
    "classification": TaskSpec(
        type="classification",
        file="x",
        text_column="t",
        label_column="y",
        text_pair_column="p",
    ),  # fmt: skip
}
# text made of what breaks delimited files: delimiters, quotes, line breaks, a header's names
TRICKY = st.text(alphabet=string.ascii_letters[:6] + ',"\t\r\n \\{}:[]' + "typ19.", max_size=300)
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def read_all(path: Path, fmt: str, on_bad_row: str) -> None:
    for spec in SPECS.values():
        spec.format = fmt
        try:
            result = read_examples(path, "t", spec, on_bad_row=on_bad_row)
        except DataError as e:
            assert str(path) in str(e)
            continue
        examples = result.examples
        assert len(examples.texts) == len(examples.labels) == len(examples.lines)
        assert all(text.strip() for text in examples.texts)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
@pytest.mark.parametrize("on_bad_row", ["error", "skip"])
@SETTINGS
@given(data=st.one_of(st.binary(max_size=400), TRICKY.map(lambda s: ("t,y,p\n" + s).encode())))
def test_any_bytes_parse_or_raise_mtls_error(tmp_path, fmt, on_bad_row, data):
    path = tmp_path / f"f.{fmt}"
    path.write_bytes(data)
    read_all(path, fmt, on_bad_row)


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "lines"])
@SETTINGS
@given(text=TRICKY)
def test_any_text_reads_as_a_table_or_raises_mtls_error(fmt, text):
    try:
        table = read_table("in", text, fmt)
    except DataError as e:
        assert str(e).startswith("in")
        return
    assert all(isinstance(values, dict) for _, values in table.rows)


@SETTINGS
@given(rows=st.lists(st.tuples(TRICKY, st.integers(-5, 5)), min_size=1, max_size=20))
def test_quoted_csv_round_trips(tmp_path, rows):
    """Any texts, written with standard CSV quoting (CRLF rows, so CR and LF in a text are
    quoted), read back exactly, empty ones skipped and counted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["t", "y"])
    writer.writerows(rows)
    path = tmp_path / "r.csv"
    path.write_bytes(buffer.getvalue().encode())
    spec = TaskSpec(type="regression", file="x", text_column="t", label_column="y")
    kept = [(text.strip(), float(y)) for text, y in rows if text.strip()]
    result = read_examples(path, "t", spec, on_bad_row="skip")
    assert list(zip(result.examples.texts, result.examples.labels, strict=True)) == kept
    assert result.skipped == len(rows) - len(kept)


# what predict's readers and writers meet: TRICKY plus Unicode line separators, a form feed, emoji
ANY_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(',"\t\r\n \u2028\u2029\x85\x0c\U0001f600')),
        st.characters(codec="utf-8"),
    ),
    max_size=60,
)
VALUES = st.lists(st.tuples(ANY_TEXT, ANY_TEXT), min_size=1, max_size=8)


def _rows(values: list[tuple[str, str]]) -> list[dict]:
    return [{"text": a, "label": b} for a, b in values]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@SETTINGS
@given(values=VALUES)
def test_written_rows_read_back_the_same(fmt, values):
    """What `write_rows` writes as CSV or JSON Lines, predict's reader reads back exactly."""
    rows = _rows(values)
    table = read_table("out", write_rows(rows, ["text", "label"], fmt), fmt)
    assert [r for _, r in table.rows] == rows


@SETTINGS
@given(values=VALUES)
def test_written_tsv_reads_back_with_breaks_as_spaces(values):
    """TSV has no quoting: values read back with tabs and CR/LF as spaces, quotes kept."""
    rows = _rows(values)
    table = read_table("out", write_rows(rows, ["text", "label"], "tsv"), "tsv")
    spaced = [{k: v.replace("\t", " ").replace("\r", " ").replace("\n", " ") for k, v in r.items()}
              for r in rows]  # fmt: skip
    assert [r for _, r in table.rows] == spaced


@SETTINGS
@given(lines=st.lists(ANY_TEXT.map(lambda s: s.replace("\n", "")), min_size=1, max_size=8))
def test_training_and_predict_split_lines_alike(tmp_path, lines):
    """A .txt file's lines are split on "\\n" alone, the same way by training and predict."""
    text = "\n".join(lines) + "\n"
    path = tmp_path / "in.txt"
    path.write_text(text, encoding="utf-8", newline="")
    predicted = read_table("in", text, "lines").rows
    assert [line for line, _ in predicted] == list(range(1, len(lines) + 1))
    trained = {line: values["text"] for line, values, _ in read_lines(path)}
    assert trained == {i: v["text"].strip() for i, v in predicted if v["text"].strip()}


def test_windows_line_ends_are_not_part_of_a_line():
    """A CRLF .txt echoes its texts without the "\\r" (predict's output rows are the input's)."""
    rows = read_table("in", "Der Film war gut.\r\nSchlecht.\r\n", "lines").rows
    assert rows == [(1, {"text": "Der Film war gut."}), (2, {"text": "Schlecht."})]
