"""One run per directory: `run.lock`, claimed before anything is written there.

A lock file is created whole, already flocked and holding its owner (pid, host, start time),
by writing a temporary file and hard-linking it to `run.lock`: the link fails if the name
exists, so of two runs started together exactly one claims the directory. `fcntl.flock` rather
than O_EXCL alone tells a live holder from a dead one: the kernel drops a dead process's flock,
so a lock file that can be flocked was left by a process that no longer runs (killed before it
could remove it). Such a stale lock is reported, never taken silently: the directory may hold a
half-written run. A run removes its lock when it ends (normally, on an error or a stop by
signal); the process's lock file handles are closed with it. flock is local to a host (and
unreliable on some network file systems), hence the host in the lock's text.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import time
from pathlib import Path

from mtl.errors import MtlError

LOCK_NAME = "run.lock"
_held: dict[Path, int] = {}  # lock path -> the open, flocked file descriptor


class RunLockedError(MtlError):
    """The directory is claimed by another run, or by one that died."""


def ddp_worker() -> bool:
    """Whether this process is a DDP worker started by Lightning: it joins its launcher's run
    (and lock) rather than claiming one."""
    return os.environ.get("LOCAL_RANK", "0") != "0"


def claim(directory: Path) -> None:
    """Claim `directory` for this process (created if missing) or raise RunLockedError."""
    if ddp_worker():
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = (directory / LOCK_NAME).resolve()
    if path in _held:
        return
    tmp = path.with_name(f".{LOCK_NAME}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode())
        os.link(tmp, path)
    except FileExistsError:
        os.close(fd)
        raise RunLockedError(describe(path)) from None
    except BaseException:
        os.close(fd)
        raise
    finally:
        tmp.unlink(missing_ok=True)
    _held[path] = fd


def check_free(directory: Path, key: str) -> None:
    """Raise RunLockedError if a live or dead run holds `directory`'s lock (`key` names the
    setting that pointed there)."""
    path = directory / LOCK_NAME
    if not ddp_worker() and path.exists() and path.resolve() not in _held:
        raise RunLockedError(f"{key}={directory}: {describe(path)}")


def describe(path: Path) -> str:
    """What a user reads about an existing lock file: who holds it, or that its holder died."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return f"{path.parent} was being claimed by another run; try again"
    try:
        owner = os.read(fd, 512).decode(errors="replace").strip() or "an unknown process"
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"{path.parent} is in use by another run ({owner}); wait for it to end"
    finally:
        os.close(fd)
    return (
        f"{path} is left by a run that no longer runs ({owner}); if no process uses "
        f"{path.parent}, delete {path} and run again"
    )


def release_all() -> None:
    """Remove and unlock every lock this process holds (at the end of a command)."""
    while _held:
        path, fd = _held.popitem()
        path.unlink(missing_ok=True)
        os.close(fd)
