"""Readers for the files that are not CSV, TSV or JSON Lines: plain text, CoNLL, and two real
data sets' own layouts.

Each yields records as `mtl.data.readers.iter_records` does, `(line, {column: value}, problem)`:
`line` is the 1-based source line, values are stripped of surrounding whitespace, and
`problem` is None or why the row is bad (the caller stops or skips it, as `on_bad_row` says).
There is no header record. Files are decoded with `mtl.data.decoding.read_text`, so a missing
file or a decoding error is a DataError naming the file and line.

- `read_lines` (format name `lines`): one text a line, blank lines skipped; column `text`
  (unlabelled text, for masked-LM tasks).
- `read_conll` (format name `conll`): a token a line with its tag as the last of its
  whitespace-separated fields, a blank line (or `-DOCSTART-`) between sentences. One record
  per sentence: `text` = its tokens and `label` = their tags, each joined by single spaces.
- `read_parallel_lines` (format name `parallel_lines`): TweetEval-style split files such as
  UMSAB's `train_text.txt` + `train_labels.txt`, where line i of one goes with line i of the
  other. Columns `text`, `label`.
- `read_aligned_pairs` (format name `aligned_pairs`): OneStopEnglish's sentence-aligned files
  (`ADV-ELE.txt`, `ADV-INT.txt`, `ELE-INT.txt`): blocks of two lines, one sentence at each of
  the two levels in the file name, separated by a line `*******`. One record per block, the
  simpler sentence first: columns `text`, `text_pair`, `text_level`, `text_pair_level`.
- `read_simpler_pairs` (format name `simpler_pairs`): the same blocks as a "which of the two
  is simpler?" task: each pair twice, in both orders, with `simpler` = first | second (so the
  labels are balanced) and `pair` = the block's first line (keep both orders in one split).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mtl.data.decoding import read_text, split_lines
from mtl.errors import DataError

if TYPE_CHECKING:
    from mtl.data.readers import Record

LEVELS = {"ELE": "elementary", "INT": "intermediate", "ADV": "advanced"}  # simplest first
SEPARATOR = "*******"


def labels_path(text_path: Path) -> Path:
    """The labels file beside a text file: `train_text.txt` -> `train_labels.txt`."""
    head, found, tail = text_path.name.rpartition("_text")
    if not found:
        raise DataError(
            f"{text_path}: cannot derive the labels file from a name without '_text' "
            "(expected e.g. train_text.txt beside train_labels.txt); name the labels file"
        )
    return text_path.with_name(f"{head}_labels{tail}")


def read_parallel_lines(
    text_path: Path, encoding: str = "utf-8", label_path: Path | None = None
) -> Iterator[Record]:
    """Records `(i, {"text": line i of text_path, "label": line i of label_path}, problem)`;
    `label_path` defaults to `labels_path(text_path)`. An empty text or label is a problem;
    files of different lengths are a DataError naming both."""
    label_path = label_path or labels_path(text_path)
    texts, labels = _lines(text_path, encoding), _lines(label_path, encoding)
    if len(texts) != len(labels):
        raise DataError(
            f"{text_path} has {len(texts)} lines but {label_path} has {len(labels)}; line i of "
            "one must go with line i of the other, so check that both come from the same split"
        )
    for line, (text, label) in enumerate(zip(texts, labels, strict=True), start=1):
        problem = None
        if not text:
            problem = f"empty line in {text_path.name}"
        elif not label:
            problem = f"empty line in {label_path.name}"
        yield line, {"text": text, "label": label}, problem


def read_aligned_pairs(path: Path, encoding: str = "utf-8") -> Iterator[Record]:
    """One record per block: `(line of the block's first sentence, {"text": the simpler
    sentence, "text_pair": the other, "text_level": e.g. "elementary", "text_pair_level": e.g.
    "advanced"}, problem)`. A block without exactly two sentences is a record with a problem
    and no values; blank lines are ignored."""
    levels = _levels(path)
    block: list[tuple[int, str]] = []  # (line, sentence) since the last separator
    lines = _lines(path, encoding)
    for number, line in enumerate(lines, start=1):
        if line == SEPARATOR:
            yield _pair(block, number, levels)
            block = []
        elif line:
            block.append((number, line))
    if block:  # the last block, without a closing separator
        yield _pair(block, len(lines), levels)


def read_simpler_pairs(path: Path, encoding: str = "utf-8") -> Iterator[Record]:
    """Records `(line, {"text", "text_pair", "simpler", "pair"}, problem)`, two per block."""
    for line, values, problem in read_aligned_pairs(path, encoding):
        if problem:
            yield line, values, problem
            continue
        simple, other, pair = values["text"], values["text_pair"], str(line)
        yield line, {"text": simple, "text_pair": other, "simpler": "first", "pair": pair}, None
        yield line, {"text": other, "text_pair": simple, "simpler": "second", "pair": pair}, None


def read_lines(path: Path, encoding: str = "utf-8") -> Iterator[Record]:
    for line, text in enumerate(_lines(path, encoding), start=1):
        if text:
            yield line, {"text": text}, None


def read_conll(path: Path, encoding: str = "utf-8") -> Iterator[Record]:
    sentence: list[tuple[str, str]] = []
    start, problem = 0, None  # a bad sentence is reported at its first bad line
    for line, text in enumerate([*_lines(path, encoding), ""], start=1):
        if not text or text.startswith("-DOCSTART-"):
            if sentence or problem:
                words = " ".join(word for word, _ in sentence)
                tags = " ".join(tag for _, tag in sentence)
                yield start, {"text": words, "label": tags}, problem
            sentence, problem = [], None
            continue
        fields = text.split()
        if len(fields) < 2 and problem is None:
            start, problem = line, f"{text!r:.40} has a token but no tag (expected: TOKEN ... TAG)"
        elif not sentence and problem is None:
            start = line
        if len(fields) >= 2:
            sentence.append((fields[0], fields[-1]))


def _lines(path: Path, encoding: str) -> list[str]:
    """The lines of a file, stripped; a final newline does not start another line."""
    return [line.strip() for line in split_lines(read_text(path, encoding))]


def _levels(path: Path) -> tuple[str, str]:
    """The levels of a block's first and second line, from a file name like `ADV-ELE.txt`."""
    codes = path.stem.upper().split("-")
    if len(codes) != 2 or codes[0] == codes[1] or not set(codes) <= LEVELS.keys():
        raise DataError(
            f"{path}: cannot tell the two levels from the file name; expected FIRST-SECOND.txt "
            f"with two of {', '.join(LEVELS)} (e.g. ADV-ELE.txt), as in OneStopEnglish"
        )
    return LEVELS[codes[0]], LEVELS[codes[1]]


def _pair(block: list[tuple[int, str]], end: int, levels: tuple[str, str]) -> Record:
    """The record of one block, which ends at line `end`."""
    if len(block) != 2:
        start = block[0][0] if block else end
        problem = f"a block of {len(block)} non-blank lines ending at line {end}, expected 2"
        return start, {}, f"{problem} (a sentence at each level)"
    (start, first), (_, second) = block
    rank = list(LEVELS.values()).index
    sides = sorted([(first, levels[0]), (second, levels[1])], key=lambda side: rank(side[1]))
    (text, text_level), (pair, pair_level) = sides
    values = {
        "text": text,
        "text_pair": pair,
        "text_level": text_level,
        "text_pair_level": pair_level,
    }
    return start, values, None
