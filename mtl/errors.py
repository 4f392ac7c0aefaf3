"""Errors about the user's input. Each message names the config key, file, line or column."""

from __future__ import annotations

import math


class MtlError(ValueError):
    """Bad input: the entry points print the message alone, without a traceback."""


class ConfigError(MtlError):
    """A configuration value that cannot work, with the key that holds it."""


class DataError(MtlError):
    """A data file that cannot be used as configured, with file, line and column."""


class CheckpointError(MtlError):
    """A checkpoint directory that cannot be loaded as a BERT encoder."""


def require(key: str, value: object, ok: bool, allowed: str) -> None:
    """A setting's range check, written beside the setting's definition (a config dataclass's
    `check`): `require("data.batch_size", v, v > 0, "> 0")`. NaN and infinities never pass."""
    finite = not isinstance(value, float) or math.isfinite(value)
    if not (ok and finite):
        raise ConfigError(f"{key}: must be {allowed}, got {value!r}")
