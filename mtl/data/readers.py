"""Read task files (CSV, TSV, JSON Lines, and the formats of mtl/data/formats.py) into
validated examples, naming file, line and column.

By default the first bad row stops the run with `file:line: column 'c': reason`; with
`on_bad_row: skip` bad rows are counted and left out instead.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mtl.data.decoding import read_text, split_lines
from mtl.data.formats import (
    read_aligned_pairs,
    read_conll,
    read_lines,
    read_parallel_lines,
    read_simpler_pairs,
)
from mtl.errors import DataError
from mtl.tasks import Label, LabelledSpec, TaskSpec, kind_named

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".txt": "lines", ".conll": "conll"}
# formats that are not tables (mtl/data/formats.py): they read their files themselves
SPECIAL = {"lines": read_lines, "conll": read_conll, "parallel_lines": read_parallel_lines,
           "aligned_pairs": read_aligned_pairs, "simpler_pairs": read_simpler_pairs}  # fmt: skip


@dataclass
class Examples:
    """The validated rows of one file (or one split of it), column by column."""

    path: Path
    texts: list[str] = field(default_factory=list)
    pairs: list[str] | None = None
    labels: list[Label] = field(default_factory=list)
    groups: list[str] | None = None
    lines: list[int] = field(default_factory=list)  # source line of each example, for errors

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: list[int]) -> Examples:
        pick = lambda xs: [xs[i] for i in index] if xs is not None else None  # noqa: E731
        return Examples(
            self.path, pick(self.texts), pick(self.pairs), pick(self.labels), pick(self.groups),
            pick(self.lines),
        )  # fmt: skip


@dataclass
class ReadResult:
    examples: Examples
    skipped: int = 0
    first_skipped: str | None = None  # the first skipped row's reason, for the report

    def skip(self, reason: str, on_bad_row: str) -> bool:
        """Count a bad row if the setting allows skipping; False means: stop with `reason`."""
        if on_bad_row != "skip":
            return False
        self.skipped += 1
        self.first_skipped = self.first_skipped or reason
        return True


def detect_format(path: Path, configured: str | None) -> str:
    if configured:
        known = list(dict.fromkeys([*FORMATS.values(), *SPECIAL]))
        if configured not in known:
            raise DataError(
                f"{path}: format {configured!r} is not one of {', '.join(known)} (task `format`)"
            )
        return configured
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; set the task's "
            "`format` to csv, tsv or jsonl"
        ) from None


Record = tuple[int, dict[str, str | None], str | None]  # (line, {column: value}, problem)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # JSON's \ud800 escapes decode to these


def iter_records(path: Path | str, fmt: str, text: str) -> Iterator[Record]:
    """One record per row; a record with a problem (malformed JSON, a wrong number of fields,
    a runaway quote) is a bad row. For CSV/TSV the first record is the header."""
    if fmt == "jsonl":
        yield from _json_records(text)
    else:
        yield from _delimited_records(path, fmt, text)


def _json_records(text: str) -> Iterator[Record]:
    # split on "\n" only: JSON strings may hold raw U+2028 and other line separators
    for line_no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            yield line_no, {}, f"invalid JSON at character {e.colno} ({e.msg})"
            continue
        if not isinstance(record, dict):
            yield line_no, {}, f"expected a JSON object, got {record!r:.40}"
            continue
        yield line_no, *_json_values(record)


def _delimited_records(path: Path | str, fmt: str, text: str) -> Iterator[Record]:
    """CSV (RFC 4180 quoting) or TSV (no quoting). A quoted field may span lines; a quote that
    never closes, or that leaves its row with the wrong number of fields, is a bad row named
    by the line it opened on, and reading goes on from the next line."""
    csv.field_size_limit(2**31 - 1)  # very long texts are fine: tokenization truncates them
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    lines = io.StringIO(text, newline="").readlines()  # split as the csv module splits
    reader = csv.reader(lines, strict=True, **dialect)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: the file is empty (expected a header row)") from None
    except csv.Error as e:
        raise DataError(f"{path}:1: the header row cannot be read ({e})") from None
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise DataError(f"{path}:1: column {twice[0]!r} appears more than once in the header")
    yield 1, {name: name for name in header}, None
    index = reader.line_num  # lines read so far
    while index < len(lines):
        reader, consumed = csv.reader(lines[index:], strict=True, **dialect), 0
        try:
            for row in reader:
                start, span = index + consumed + 1, reader.line_num - consumed
                consumed = reader.line_num
                if not row:
                    continue
                if span > 1 and len(row) != len(header):
                    yield (
                        start,
                        {},
                        (
                            f"a quote opened on line {start} runs over {span} lines and leaves "
                            f"{len(row)} fields (the header has {len(header)}): a stray quote?"
                        ),
                    )
                    break
                problem = None
                if len(row) > len(header):
                    problem = (
                        f"{len(row)} fields but the header has {len(header)} "
                        "(an unquoted delimiter in the text?)"
                    )
                padded = row + [None] * (len(header) - len(row))  # short rows: missing columns
                yield start, dict(zip(header, padded, strict=False)), problem
            else:
                return
        except csv.Error as e:
            start, span = index + consumed + 1, reader.line_num - consumed
            if "unexpected end of data" in str(e):
                problem = (
                    f"the quote opened on line {start} is never closed (it runs over the "
                    f"{span} lines to the end of the file)"
                )
            else:
                problem = f"a quote opened on line {start} runs over {span} line(s), then: {e}"
            yield start, {}, problem
        index = start  # go on with the line after the bad row's first line


def _json_values(record: dict) -> tuple[dict[str, str | None], str | None]:
    """Values as text: strings as they are, numbers written out; lists, objects and booleans
    are a problem (null counts as missing)."""
    values: dict[str, str | None] = {}
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float | None):
            return values, f"column {key!r}: expected a string or a number, got {value!r:.40}"
        texts = [key, value] if isinstance(value, str) else [key]
        if lone := next(filter(None, map(LONE_SURROGATE.search, texts)), None):
            return values, (
                f"column {key!r}: a lone surrogate \\u{ord(lone[0]):04x} at character "
                f"{lone.start() + 1}, which is not text (a \\u escape in the JSON?)"
            )
        values[key] = None if value is None else str(value)
    return values, None


def read_examples(
    path: Path,
    task: str,
    spec: TaskSpec,
    group_column: str | None = None,
    on_bad_row: str = "error",
) -> ReadResult:
    """Read and validate one file for the task named `task`; see the module docstring."""
    fmt = detect_format(path, spec.format)
    columns = [spec.text_column, *spec.label_sources]
    columns += [c for c in (spec.text_pair_column, group_column) if c]
    result = ReadResult(Examples(path, pairs=[] if spec.text_pair_column else None,
                                 groups=[] if group_column else None))  # fmt: skip
    if fmt in SPECIAL:
        records = SPECIAL[fmt](path, spec.encoding)
    else:
        records = iter_records(path, fmt, read_text(path, spec.encoding))
    if fmt in ("csv", "tsv"):
        _, header, _ = next(records)
        _check_header(path, task, list(header), columns)
    for line, record, problem in records:
        try:
            if problem:
                raise ValueError(problem)
            values, label = _validated(spec, record, columns)
        except ValueError as e:
            if not result.skip(f"{path}:{line}: {e}", on_bad_row):
                raise DataError(f"{path}:{line}: {e}") from None
            continue
        ex = result.examples
        ex.texts.append(values[spec.text_column])
        ex.labels.append(label)
        ex.lines.append(line)
        if ex.pairs is not None:
            ex.pairs.append(values[spec.text_pair_column])  # type: ignore[index]
        if ex.groups is not None:
            ex.groups.append(values[group_column])  # type: ignore[index]
    if not result.examples and not result.skipped:
        where = " after its header" if fmt in ("csv", "tsv") else ""
        raise DataError(f"{path}: has no data rows{where}")
    return result


def _check_header(path: Path, task: str, header: list[str], columns: list[str]) -> None:
    for column in columns:
        if column not in header:
            raise DataError(
                f"{path}:1: no column {column!r} in the header (columns: {', '.join(header)}); "
                f"check task.{task}'s column settings"
            )


def _validated(
    spec: TaskSpec, record: dict[str, str | None], columns: list[str]
) -> tuple[dict[str, str], Label]:
    """The needed columns of one record and its parsed label (None for a task without labels),
    or ValueError("column 'c': ..."). With `label_columns` the label is a tuple, None where a
    cell is empty: a missing label, left out of the loss and the metrics (a row may lack them
    all), never a bad row."""
    several = isinstance(spec, LabelledSpec) and bool(spec.label_columns)
    values = {}
    for column in columns:
        value = record.get(column)
        if value is None and not (several and column in spec.label_sources):
            raise ValueError(f"column {column!r}: missing")
        value = (value or "").strip()
        if column in (spec.text_column, spec.text_pair_column) and not value:
            raise ValueError(f"column {column!r}: text is empty")
        values[column] = value
    if not spec.label_sources:
        return values, None
    parse = kind_named(spec.type).parse_label
    if not several:
        [column] = spec.label_sources
        return values, _parsed(parse, spec, column, values[column])
    return values, tuple(
        _parsed(parse, spec, c, values[c]) if values[c] else None for c in spec.label_sources
    )


def _parsed(parse, spec: TaskSpec, column: str, raw: str) -> Label:
    try:
        return parse(spec, raw)
    except ValueError as e:
        raise ValueError(f"column {column!r}: {e}") from None


@dataclass
class Table:
    """An input file's rows as read, without a task: column names in order, and each row's
    line number and values (for commands that add columns to what they read)."""

    columns: list[str]
    rows: list[tuple[int, dict[str, str | None]]]


def read_table(source: str, text: str, fmt: str) -> Table:
    """CSV, TSV, JSON Lines, or `lines` (one text a line, in a column named "text")."""
    if fmt == "lines":
        lines = split_lines(text)
        return Table(["text"], [(i, {"text": line}) for i, line in enumerate(lines, start=1)])
    records = iter_records(source, fmt, text)
    columns: dict[str, None] = {}
    if fmt != "jsonl":
        _, header, _ = next(records)
        columns = dict.fromkeys(header)
    rows = []
    for line, record, problem in records:
        if problem:
            raise DataError(f"{source}:{line}: {problem}")
        columns.update(dict.fromkeys(record))
        rows.append((line, record))
    return Table(list(columns), rows)
