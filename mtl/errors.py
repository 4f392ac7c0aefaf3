"""Errors about the user's input. Each message names the config key, file, line or column."""


class MtlError(ValueError):
    """Bad input: the entry points print the message alone, without a traceback."""


class ConfigError(MtlError):
    """A configuration value that cannot work, with the key that holds it."""


class DataError(MtlError):
    """A data file that cannot be used as configured, with file, line and column."""


class CheckpointError(MtlError):
    """A checkpoint directory that cannot be loaded as a BERT encoder."""
