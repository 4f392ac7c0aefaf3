"""Files and bytes as text, with errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

from mtl.errors import DataError


def read_text(path: Path, encoding: str, pipe_ok: bool = False) -> str:
    """The whole file decoded; a decoding error names the line and suggests the encoding key.
    `pipe_ok`: a pipe (`<(...)`, /dev/stdin) is read too, by a caller that reads it once."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file() and not pipe_ok:
        raise DataError(f"{path}: not a regular file (a pipe?); data files are read more than once")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None
    return decode(raw, str(path), encoding)


def decode(raw: bytes, source: str, encoding: str) -> str:
    """Bytes read from `source` (a file, or stdin) as text, without a byte-order mark."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{source}:{line}: cannot decode byte {raw[e.start]:#04x} as {encoding}; name its "
            "encoding (the task's `encoding`; --encoding for predict and evaluate; "
            "TextComplexityDE, for example, is cp1252)"
        ) from None
    except LookupError:
        raise DataError(f"{source}: unknown encoding {encoding!r}") from None
    return text.removeprefix("\ufeff")


def split_lines(text: str) -> list[str]:
    """A text's lines, split on "\\n" alone (U+2028, U+0085 or a form feed stay inside a line),
    without the "\\r" of a Windows line end; a final newline does not start another line.
    Training and predict both split with this."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]
