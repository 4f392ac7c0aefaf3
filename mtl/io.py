"""Atomic file writes (a crash leaves the old file or the new one, never half of one), and the
one reader of mtl's own JSON files."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mtl.errors import MtlError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: a new file of our own; mode 0o666 minus the umask, as for any new file
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    mode = os.stat(tmp).st_mode
    try:
        write(tmp)
        os.chmod(tmp, mode)  # writers that recreate the file (safetensors) keep the usual mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)  # and the rename itself is


def fsync_directory(path: Path) -> None:
    """Make the directory's entries (a rename, a new link) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@contextmanager
def fresh_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to fill, then rename it to `path`: the directory
    appears complete or not at all. An existing `path` must be an empty directory."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise MtlError(f"{path} already exists and is not empty; choose a new directory")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json_object(path: Path, error: type[MtlError] = MtlError) -> dict:
    """A JSON object file that mtl wrote (metrics.json, cv.json, mtl.json, ensemble.json); one
    that cannot be read (missing, truncated, not an object) is an `error` naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object")
    return data
