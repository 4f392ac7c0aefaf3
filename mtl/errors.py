"""Errors about the user's input. Each message names the config key, file, line or column."""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterable


class MtlError(ValueError):
    """Bad input: the entry points print the message alone, without a traceback."""


class ConfigError(MtlError):
    """A configuration value that cannot work, with the key that holds it."""


class DataError(MtlError):
    """A data file that cannot be used as configured, with file, line and column."""


class CheckpointError(MtlError):
    """A checkpoint or encoder directory that cannot be loaded."""


def require(key: str, value: object, ok: bool, allowed: str) -> None:
    """A setting's range check, written beside the setting's definition (a config dataclass's
    `check`): `require("data.batch_size", v, v > 0, "> 0")`. NaN and infinities never pass."""
    finite = not isinstance(value, float) or math.isfinite(value)
    if not (ok and finite):
        raise ConfigError(f"{key}: must be {allowed}, got {value!r}")


def require_known(keys: Iterable[str], known: Collection[str], prefix: str, note: str = "") -> None:
    """Refuse the first key not in `known`, naming `<prefix><key>` and the closest known key:
    `task.x.labl: unknown key of regression tasks (did you mean task.x.label_column?)`."""
    for key in sorted(set(keys) - set(known)):
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise ConfigError(f"{prefix}{key}: unknown key{note}{hint}")


def describe_os_error(error: OSError, path: object = None) -> str:
    """`FILE: reason` for a file the system refused (permissions, a read-only or full disk, a
    path under a file); `path` names it where the error does not."""
    reason = error.strerror or str(error)
    name = error.filename or path
    return f"{name}: {reason}" if name else reason
