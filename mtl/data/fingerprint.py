"""Data fingerprints: each data file's size and sha256, recorded by a run (in its checkpoints
and metrics.json, through `TaskData.summary()`) and compared where the run's data is read
again (`mtl.evaluate --split`, `resume=`), so that changed data is refused rather than
silently re-split. A run's summary without fingerprints (written before they existed) is not
compared."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import BinaryIO

from mtl.errors import DataError

CHUNK = 1 << 20  # bytes read and hashed at a time


def digest(src: BinaryIO, out: BinaryIO | None = None) -> tuple[int, str]:
    """Size and sha256 of what `src` holds, read in chunks, each also written to `out`."""
    hasher, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        hasher.update(chunk)
        size += len(chunk)
        if out:
            out.write(chunk)
    return size, hasher.hexdigest()


def file_fingerprint(path: str | Path) -> dict[str, int | str]:
    """`{"bytes": size, "sha256": hex}` of a file (hashed once while it is unchanged)."""
    stat = Path(path).stat()
    return _fingerprint(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _fingerprint(path: str, size: int, mtime_ns: int) -> dict[str, int | str]:
    with open(path, "rb") as f:
        size, sha = digest(f)
    return {"bytes": size, "sha256": sha}


def recorded_files_now(recorded: dict) -> dict:
    """`recorded` ({task: {split: summary}}) with each fingerprinted file's size and sha256 as
    they are now (files gone are left to the reader to report)."""
    return {
        task: {split: {"file": s["file"], **file_fingerprint(s["file"])}
               for split, s in splits.items() if "sha256" in s and Path(s["file"]).is_file()}
        for task, splits in recorded.items()
    }  # fmt: skip


def changes(recorded: dict, current: dict) -> list[str]:
    """What differs between a run's recorded data summaries ({task: {split: summary}}) and the
    current ones, for each split recorded with a fingerprint."""
    out = []
    for task, splits in current.items():
        for split, now in splits.items():
            then = recorded.get(task, {}).get(split, {})
            if "sha256" in then and then["sha256"] != now.get("sha256"):
                out.append(
                    f"{now['file']} (task {task}, split {split}) changed since the run was "
                    f"trained ({then['bytes']} bytes then, {now.get('bytes')} now, another sha256)"
                )
    return out


def check_unchanged(recorded: dict, current: dict, allow: bool, allow_with: str) -> list[str]:
    """The changes found, when `allow`; else raise DataError naming the first changed file
    and `allow_with`, the setting that goes ahead anyway."""
    found = changes(recorded, current)
    if found and not allow:
        raise DataError(f"{found[0]}; refusing to use it (go ahead anyway with {allow_with})")
    return found
