"""Atomic file writes (a crash leaves the old file or the new one, never half of one), the
checks of an output path before any work, and the one reader of mtl's own JSON files.

A write goes to a temporary sibling `.NAME.<12 hex digits>.tmp` first; one that a SIGKILL left
is removed by the next write of that name (`remove_stale_temporaries`)."""

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
    tmp = _temporary(path)
    # O_EXCL: a new file of our own; mode 0o666 minus the umask, as for any new file
    _named(path, lambda: os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)))
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
    if path.exists() and not path.is_dir():
        raise MtlError(f"{path} is a file, not a directory; choose a new directory")
    if path.exists() and any(path.iterdir()):
        raise MtlError(f"{path} already exists and is not empty; choose a new directory")
    remove_stale_temporaries(path.parent, path.name)
    tmp = _temporary(path)
    _named(path, lambda: tmp.mkdir(parents=True))
    try:
        yield tmp
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _named(path: Path, create: Callable[[], None]) -> None:
    """Create a temporary for `path`; if the system refuses, the error names `path` itself."""
    try:
        create()
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def remove_stale_temporaries(directory: Path, name: str = "*") -> list[Path]:
    """Remove the temporaries (files or directories) that killed writes of `directory/name`
    left; `name` may be a glob pattern (`*.ckpt`). Callers write `name` alone: a run under its
    lock, a command into the output it was given."""
    if not directory.is_dir():
        return []
    stale = sorted(directory.glob(f".{name}.{'[0-9a-f]' * 12}.tmp"))
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


RECORDS = ("metrics.json", "cv.json", "mtl.json", "ensemble.json")  # what mtl's runs are read by


def check_output_file(path: Path, key: str, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse, before any work, an output file path that cannot or must not be written: a
    directory, a FIFO or device, one of the command's `inputs`, or one of mtl's checkpoints,
    weights or run records (`key` names the option).
    Removes the temporaries that a killed earlier write of it left."""
    if path.is_dir():
        raise MtlError(f"{key} {path}: is a directory; give a file path")
    above = next(parent for parent in path.absolute().parents if parent.exists())
    if not above.is_dir():
        raise MtlError(f"{key} {path}: {above} is a file, not a directory")
    if path.exists() and not path.is_file():
        raise MtlError(f"{key} {path}: not a regular file (a FIFO or device); give a file path")
    for source in inputs:
        if path.exists() and source.exists() and os.path.samefile(path, source):
            raise MtlError(f"{key} {path}: is a file this command reads; write to another file")
    if path.is_file() and (path.suffix in (".ckpt", ".safetensors") or path.name in RECORDS):
        raise MtlError(
            f"{key} {path}: is a checkpoint, weights or a run's record, which mtl does not "
            "overwrite; write to another file"
        )
    remove_stale_temporaries(path.parent, path.name)


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
