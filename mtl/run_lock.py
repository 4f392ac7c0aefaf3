"""One run per directory: `run.lock`, claimed before anything is written there.

A lock file is created whole, already flocked and holding its owner (pid, host, start time),
by writing a temporary file and hard-linking it to `run.lock`: the link fails if the name
exists, so of two runs started together exactly one claims the directory. `fcntl.flock` rather
than O_EXCL alone tells a live holder from a dead one: the kernel drops a dead process's flock,
so a lock file that can be flocked was left by a process that no longer runs (killed before it
could remove it). Such a stale lock is reported, never taken silently: a new run refuses the
directory, which may hold a half-written run; `resume=` of that directory (what a killed run is
resumed with) takes it over with a warning naming the dead holder, if it was on this host. A run
removes its lock when it ends (normally, on an error or a stop by signal); the process's lock
file handles are closed with it. flock is local to a host (and unreliable on some network file
systems), hence the host in the lock's text: a lock from another host is never taken over.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path

from mtl.errors import MtlError

LOCK_NAME = "run.lock"
_held: dict[Path, int] = {}  # lock path -> the open, flocked file descriptor
_created: set[Path] = set()  # run directories this process's claims created
HYDRA_ONLY = {".hydra", "train.log"}  # what Hydra writes before a run's job starts
log = logging.getLogger(__name__)


class RunLockedError(MtlError):
    """The directory is claimed by another run, or by one that died."""


def ddp_worker() -> bool:
    """Whether this process is a DDP worker started by Lightning: it joins its launcher's run
    (and lock) rather than claiming one."""
    return os.environ.get("LOCAL_RANK", "0") != "0"


def claim(directory: Path, take_stale: bool = False) -> None:
    """Claim `directory` for this process (created if missing) or raise RunLockedError.
    `take_stale` (a resume of this directory) takes over a lock left on this host by a process
    that no longer runs."""
    if ddp_worker():
        return
    if not directory.exists():
        directory.mkdir(parents=True, exist_ok=True)
        _created.add(directory.resolve())
    path = (directory / LOCK_NAME).resolve()
    if path in _held:
        return
    tmp = path.with_name(f".{LOCK_NAME}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        if not _link(tmp, path, take_stale):
            raise RunLockedError(describe(path))
    except BaseException:
        os.close(fd)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    _held[path] = fd


def _link(tmp: Path, path: Path, take_stale: bool) -> bool:
    """Make the claimed lock file `tmp` the directory's `path`; False if another lock is there
    (and is not a stale one of this host to take over)."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        if not take_stale:
            return False
    try:
        old = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False  # removed meanwhile: another run is claiming the directory
    try:
        fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for the swap: one taker wins
        owner = os.read(old, 512).decode(errors="replace").strip()
        host = re.search(r" on (\S+) since ", owner)
        if not host or host[1] != socket.gethostname() or not _same_file(old, path):
            return False
        os.replace(tmp, path)
    except BlockingIOError:
        return False  # its holder runs
    finally:
        os.close(old)
    log.warning("%s was left by a run that no longer runs (%s); this resume takes it over",
                path, owner)  # fmt: skip
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (not replaced by another taker)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def check_free(directory: Path, key: str) -> None:
    """Raise RunLockedError if a running process holds `directory`'s lock (`key` names the
    setting that pointed there). A stale lock may stay: the directory is only read."""
    path = directory / LOCK_NAME
    if ddp_worker() or not path.exists() or path.resolve() in _held:
        return
    owner, live = holder(path)
    if live or owner is None:
        raise RunLockedError(f"{key}={directory}: {describe(path)}")


def holder(path: Path) -> tuple[str | None, bool]:
    """Who a lock file names (None if it is gone) and whether that process still holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None, False
    try:
        owner = os.read(fd, 512).decode(errors="replace").strip() or "an unknown process"
        if not owner.isprintable():  # not a lock file mtl wrote: never raw bytes on a terminal
            owner = f"unreadable contents {ascii(owner[:40])}"
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return owner, True
        return owner, False
    finally:
        os.close(fd)


def describe(path: Path) -> str:
    """What a user reads about an existing lock file: who holds it, or that its holder died."""
    owner, live = holder(path)
    if owner is None:
        return f"{path.parent} was being claimed by another run; try again"
    if live:
        return f"{path.parent} is in use by another run ({owner}); wait for it to end"
    host = re.search(r" on (\S+) since ", owner)
    if host and host[1] != socket.gethostname():  # its process cannot be seen from here
        return (
            f"{path} was written by a run on another host ({owner}); if that run has ended, "
            f"delete {path} and run again"
        )
    return (
        f"{path} is left by a run that no longer runs ({owner}); if no process uses "
        f"{path.parent}, delete {path} and run again"
    )


def release_all() -> None:
    """Remove and unlock every lock this process holds (at the end of a command), and the run
    directories its claims created that hold no more than Hydra's record: a run refused
    before it started (a config error, a resume of nothing) leaves no directory behind."""
    while _held:
        path, fd = _held.popitem()
        path.unlink(missing_ok=True)
        os.close(fd)
        if path.parent in _created and {p.name for p in path.parent.iterdir()} <= HYDRA_ONLY:
            shutil.rmtree(path.parent, ignore_errors=True)
        _created.discard(path.parent)
