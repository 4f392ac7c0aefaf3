"""The registry of known data sets (mtl/data/registry/<name>.json): look up, fetch, verify.

A data set lives at `<root>/<name>/<file>`, so `MTL_DATA_ROOT=<root>` serves the task configs.
`fetch` copies each file from a mirror laid out the same way (`<source>/<name>/<file>`, a
directory or an http(s) URL) or downloads it from its registered URL; either way the bytes go
to a temporary file beside the target, which takes the final name only once its sha256
matches the registry.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

from mtl import ROOT
from mtl.data.fingerprint import digest, file_fingerprint
from mtl.errors import DataError
from mtl.io import atomic_write
from mtl.tasks import TaskSpec

TIMEOUT = 60  # seconds without data before a download fails

log = logging.getLogger("mtl.data")

Report = Callable[[str], None]  # receives one progress line per file


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the data set's folder
    size: int  # bytes
    sha256: str
    url: str  # the public address it is downloaded from


@dataclass(frozen=True)
class Dataset:
    name: str  # = the folder name under the data root
    title: str
    description: str
    licence: str
    citation: str
    homepage: str
    files: tuple[DataFile, ...]
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # reader settings per task
    notes: str = ""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def registry() -> dict[str, Dataset]:
    """Every registered data set by name, in name order."""
    folder = resources.files("mtl.data") / "registry"
    files = [p for p in folder.iterdir() if p.name.endswith(".json")]
    datasets = [_dataset(json.loads(p.read_text(encoding="utf-8"))) for p in files]
    return {d.name: d for d in sorted(datasets, key=lambda d: d.name.lower())}


def _dataset(entry: dict[str, Any]) -> Dataset:
    return Dataset(**{**entry, "files": tuple(DataFile(**f) for f in entry["files"])})


def dataset(name: str) -> Dataset:
    """The registered data set `name`; an unknown name lists the known ones."""
    known = registry()
    if name not in known:
        raise DataError(f"unknown data set {name!r}; known data sets: {', '.join(known)}")
    return known[name]


def default_root() -> Path:
    """$MTL_DATA_ROOT, else the checkout's data/ folder: where `data.root` points by default."""
    if env := os.environ.get("MTL_DATA_ROOT"):
        return Path(env)
    return ROOT / "data"


def format_size(size: int) -> str:
    """Bytes as a short human-readable size (1023 B, 92.7 KiB, 3.6 MiB)."""
    if size < 1024:
        return f"{size} B"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


def verify(name: str, root: Path | None = None, report: Report | None = None) -> list[str]:
    """Check every file of data set `name` under `<root>/<name>/`: one problem per missing or
    differing file, `[]` if all match. `report` gets one progress line per file."""
    ds = dataset(name)
    root = Path(root) if root is not None else default_root()
    problems = []
    for file in ds.files:
        path = root / ds.name / file.path
        problem = _check(file, path)
        if problem:
            problems.append(f"{path}: {problem}")
        _report(report, "BAD" if problem else "verified", ds, file, problem)
    return problems


def fetch(
    name: str,
    source: str | Path | None = None,
    to: Path | None = None,
    report: Report | None = None,
) -> Path:
    """Put every file of data set `name` at `<to>/<name>/<file>` (default: the data root) and
    return that folder. Files come from `source` (`<source>/<name>/<file>`, a directory or an
    http(s) URL) or, without one, from their registered URLs. A file already there with the
    registered sha256 is left alone; a failed or differing copy leaves nothing behind."""
    ds = dataset(name)
    folder = (Path(to) if to is not None else default_root()) / ds.name
    for file in ds.files:
        target = folder / file.path
        if _check(file, target) is None:
            _report(report, "already present", ds, file)
            continue
        _install(ds, file, source, target)
        _report(report, "fetched", ds, file)
    return folder


def _report(
    report: Report | None, status: str, ds: Dataset, file: DataFile, detail: str | None = None
) -> None:
    if report:
        report(f"{status:<15} {ds.name}/{file.path}  {detail or format_size(file.size)}")


def _check(file: DataFile, path: Path) -> str | None:
    """None if `path` holds the registered file, else what is wrong with it."""
    if not path.is_file():
        return "missing"
    with open(path, "rb") as f:
        size, sha = digest(f)
    if sha == file.sha256:
        return None
    return f"sha256 {sha} ({size} bytes), expected {file.sha256} ({file.size} bytes)"


def _warn_if_not_registered(ds: Dataset, folder: Path) -> None:
    """A warning for each file of `ds` in `folder` that differs from the registry's checksum:
    it still trains (a run enforces only its own recorded fingerprints)."""
    for file in ds.files:
        path = folder / file.path
        if path.is_file() and file_fingerprint(path)["sha256"] != file.sha256:
            log.warning("%s differs from data set %s's registered sha256", path, ds.name)


def _is_url(source: str | Path) -> bool:
    return str(source).startswith(("http://", "https://"))


def _open(ds: Dataset, file: DataFile, source: str | Path | None) -> tuple[str, BinaryIO]:
    """Where the file comes from (a URL or path, for messages) and a binary stream of it."""
    if source is None or _is_url(source):
        url = file.url if source is None else f"{str(source).rstrip('/')}/{ds.name}/{file.path}"
        try:
            return url, urllib.request.urlopen(url, timeout=TIMEOUT)
        except (OSError, HTTPException) as e:
            raise DataError(
                f"{url}: download failed ({e}); check the address and the network, or fetch "
                "from a local copy with --from DIR"
            ) from None
    path = Path(source) / ds.name / file.path
    try:
        return str(path), open(path, "rb")
    except OSError as e:
        raise DataError(
            f"{path}: cannot read it ({e.strerror}); a mirror must hold each file as "
            f"<DIR>/{ds.name}/{file.path}"
        ) from None


def _install(ds: Dataset, file: DataFile, source: str | Path | None, target: Path) -> None:
    """Copy the file from its source onto `target` through a temporary file, checking its
    sha256 before the rename; on any failure the temporary file is removed."""
    origin, stream = _open(ds, file, source)
    advice = (
        "the source copy differs from the registered one; re-download it or check the source"
        if source is not None and not _is_url(source)
        else "the download differs from the registered file (cut short, or changed at the "
        "source); retry, or fetch from a checked copy with --from DIR"
    )

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as out:
            size, sha = digest(stream, out)
        if sha != file.sha256:
            raise DataError(
                f"{origin}: sha256 {sha} ({size} bytes), but the registry expects "
                f"{file.sha256} ({file.size} bytes) for {ds.name}/{file.path}; {advice}. "
                f"Nothing was written to {target}"
            )

    try:
        with stream:
            atomic_write(target, write)
    except (OSError, HTTPException) as e:
        raise DataError(
            f"copying {origin} to {target} failed ({e}); nothing was written there; retry"
        ) from None


def with_dataset(name: str, spec: TaskSpec, root: Path) -> TaskSpec:
    """`spec` with its registered data set's files (under `<root>/<data set>/`) and reader
    settings filled in wherever the spec leaves them at their defaults."""
    ds = dataset(spec.dataset)  # type: ignore[arg-type]
    key = spec.dataset_task or next(iter(ds.tasks), None)
    if key not in ds.tasks:
        raise DataError(
            f"task.{name}.dataset_task: {key!r} is not one of {ds.name}'s tasks "
            f"({', '.join(ds.tasks) or 'none registered'})"
        )
    entry, folder = ds.tasks[key], root / ds.name
    _warn_if_not_registered(ds, folder)
    defaults = TaskSpec(type=spec.type)
    given: dict[str, Any] = {
        "files": {split: str(folder / f) for split, f in entry.get("files", {}).items()},
        "file": str(folder / entry["file"]) if "file" in entry else None,
    }
    for key_ in ("format", "encoding", "text_column", "text_pair_column", "label_column",
                 "labels", "range"):  # fmt: skip
        if key_ in entry:
            given[key_] = entry[key_]
    own = {k: v for k, v in given.items() if hasattr(defaults, k)}  # the kind's keys only
    changes = {k: v for k, v in own.items() if getattr(spec, k) == getattr(defaults, k)}
    if "group_column" in entry and spec.split.group_column is None:
        changes["split"] = dataclasses.replace(spec.split, group_column=entry["group_column"])
    return dataclasses.replace(spec, **changes)
