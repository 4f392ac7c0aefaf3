"""Build objects from `_target_` config groups, with errors that name the config key."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from mtl.errors import ConfigError, MtlError


def build(key: str, node: DictConfig | dict, **kwargs: Any) -> Any:
    """hydra.utils.instantiate; a wrong argument or value becomes a ConfigError for `key`."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, MtlError):
            raise cause from None
        raise ConfigError(f"{key}: {cause or e}") from None
