"""Checks of a composed training config before anything runs or is written.

- Unknown keys are errors in every group, `+key` overrides included: the typed groups by
  their dataclass, the object groups by the signature of the class they build.
- Numeric settings are range-checked (batch sizes > 0, fractions in range, ...).
- `_target_` builds objects only where mtl expects one (trainer, logger.*, callbacks.*,
  sampler, balancer, and Hydra's own callbacks, launcher and sweeper), and only classes of the
  kind each place needs: any config file can set `_target_`, and a module name alone says
  nothing (`torch.load` lives under `torch.`).

Every error names the key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtl.config import TrainConfig
from mtl.errors import ConfigError, require, require_known
from mtl.tasks import parse_task_specs

# Where `_target_` may stand (a * matches any one key), and the base class it must derive from.
TARGETS: list[tuple[tuple[str, ...], str]] = [
    (("trainer",), "pytorch_lightning.Trainer"),
    (("logger", "*"), "pytorch_lightning.loggers.Logger"),
    (("callbacks", "*"), "pytorch_lightning.Callback"),
    (("sampler",), "mtl.sampling.TaskSampler"),
    (("balancer",), "mtl.balancing.LossBalancer"),
    (("hydra", "callbacks", "*"), "hydra.experimental.callback.Callback"),
    (("hydra", "launcher"), "hydra.plugins.launcher.Launcher"),
    (("hydra", "sweeper"), "hydra.plugins.sweeper.Sweeper"),
    (("hydra", "sweeper", "sampler"), "optuna.samplers.BaseSampler"),
]

# The trainer group's ranges (Lightning's settings); the typed groups check their own (their
# dataclass's `check`), each task its spec.
TRAINER_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "trainer.max_steps": (lambda v: isinstance(v, int) and v > 0, "a number of steps > 0"),
    "trainer.val_check_interval": (lambda v: v is None or v > 0, "> 0"),
    "trainer.log_every_n_steps": (lambda v: v > 0, "> 0"),
}


def check_config(cfg: DictConfig) -> None:
    """All checks, once per config: raises ConfigError naming the first offending key.

    A config that passed is flagged (an OmegaConf node flag, which copies of it keep): Hydra's
    run callback checks before anything is written, and the job it then starts, with a copy
    of the same config, does not check again."""
    if cfg._get_node_flag(CHECKED):
        return
    check_targets(cfg)
    check_keys(cfg)
    parse_task_specs(cfg.task)
    for group, cls in _typed_groups().items():
        if group in cfg:
            typed(cfg, group, cls).check()
    for key, (ok, allowed) in TRAINER_RANGES.items():
        value = _select(cfg, key)
        if value is _MISSING:
            continue
        try:
            good = ok(value)
        except TypeError:
            good = False
        require(key, value, good, allowed)
    check_together(cfg)
    cfg._set_flag(CHECKED, True)


def _typed_groups() -> dict[str, type]:
    """The groups the schema types by a dataclass with a `check` of its ranges."""
    return {
        f.name: f.default_factory  # type: ignore[misc]
        for f in fields(TrainConfig)
        if hasattr(getattr(f, "default_factory", None), "check")
    }


def check_together(cfg: DictConfig) -> None:
    """Settings that are valid alone but not together."""
    if _select(cfg, "transfer.features") is True:
        for key in ("transfer.probe_steps", "transfer.unfreeze_every"):
            if _select(cfg, key):
                raise ConfigError(
                    f"{key}: feature extraction trains the heads on cached sentence vectors, "
                    "so the encoder never joins; for heads first, then the encoder, use "
                    "transfer=probe_then_finetune (or transfer.features=false)"
                )
    per_step, tasks = _select(cfg, "data.tasks_per_step"), _select(cfg, "task")
    if isinstance(per_step, int) and isinstance(tasks, dict) and per_step > len(tasks):
        raise ConfigError(
            f"data.tasks_per_step: must be between 1 and the number of tasks ({len(tasks)}), "
            f"got {per_step}"
        )
    balancer = _select(cfg, "balancer._target_")
    joint = isinstance(per_step, int) and per_step >= 2
    if isinstance(balancer, str) and get_class(balancer).gradient_level and not joint:
        raise ConfigError(
            f"data.tasks_per_step: balancer {balancer.rsplit('.', 1)[-1]} combines task gradients "
            f"and needs several tasks per step: set data.tasks_per_step >= 2, got {per_step}"
        )
    multiple, length = _select(cfg, "data.pad_to_multiple"), _select(cfg, "encoder.max_length")
    if isinstance(multiple, int) and isinstance(length, int) and multiple > 1 and length % multiple:
        raise ConfigError(
            f"data.pad_to_multiple: must divide encoder.max_length={length} (a rounded-up batch "
            f"would outgrow the longest text the encoder takes), got {multiple}"
        )
    accumulate = _select(cfg, "optimizer.accumulate")
    interval = _select(cfg, "trainer.val_check_interval")
    windowed = isinstance(accumulate, int) and accumulate > 1 and isinstance(interval, int)
    if windowed and interval % accumulate:
        raise ConfigError(
            f"trainer.val_check_interval: counts batches, and must be a multiple of "
            f"optimizer.accumulate={accumulate} (validations and checkpoints fall between "
            f"optimizer steps), got {interval}"
        )


CHECKED = "mtl_checked"  # the node flag of a config that passed check_config


def check_keys(cfg: DictConfig) -> None:
    """Unknown keys in the typed groups, at the top level, and in objects' arguments."""
    schema = {f.name: f for f in fields(TrainConfig)}
    require_known(set(cfg.keys()) - {"hydra"}, set(schema), "")
    for group, field in schema.items():
        cls = field.default_factory if callable(getattr(field, "default_factory", None)) else None
        if group in cfg and hasattr(cls, "__dataclass_fields__"):
            require_known(set(cfg[group].keys()), set(cls.__dataclass_fields__), f"{group}.")
    for path, node in _target_nodes(cfg):
        if path[0] == "hydra":
            continue  # Hydra checks its own plugins' settings
        accepted = _parameters(get_class(node["_target_"]))
        if accepted is not None:
            given = {k for k in node if not k.startswith("_")}
            require_known(given, accepted, ".".join(path) + ".")


def typed(cfg: DictConfig, key: str, cls: type):
    """A config group as its dataclass; a key the dataclass lacks is an error naming it."""
    values = OmegaConf.to_container(cfg[key], resolve=True)
    require_known(set(values), set(cls.__dataclass_fields__), f"{key}.")
    return cls(**values)


def check_targets(cfg: DictConfig) -> None:
    """`_target_` only where an object is built, and only of the kind that place needs."""
    for path, node in _target_nodes(cfg):
        base = next((b for pattern, b in TARGETS if _matches(path, pattern)), None)
        key = ".".join(path)
        if base is None:
            raise ConfigError(
                f"{key}._target_: objects are built only at trainer, logger.*, callbacks.*, "
                "sampler and balancer (and Hydra's callbacks, launcher, sweeper); remove it"
            )
        try:
            target, required = get_class(node["_target_"]), get_class(base)
        except Exception as e:  # an import error, or not a class at all
            raise ConfigError(
                f"{key}._target_: {node['_target_']!r} is not a class ({e})"
            ) from None
        if not issubclass(target, required):
            raise ConfigError(
                f"{key}._target_: {node['_target_']} is not a {base} (only those are built here)"
            )
    for logging_key in ("hydra.job_logging", "hydra.hydra_logging"):
        _check_logging(_select(cfg, logging_key, resolve=False), logging_key)


def _check_logging(node: Any, key: str) -> None:
    """Python's logging config can call any factory ("()") or class: only logging's own."""
    if not isinstance(node, dict):
        return
    for k, value in node.items():
        if k == "()":
            raise ConfigError(f"{key}.(): logging factories are not allowed")
        if k == "class" and not str(value).startswith("logging."):
            raise ConfigError(f"{key}.class: {value!r} is not one of logging's classes")
        _check_logging(value, f"{key}.{k}")


def _target_nodes(cfg: DictConfig, path: tuple[str, ...] = ()):
    """(path, node) of every mapping that holds a `_target_`, depth first."""
    if cfg._is_none() or cfg._is_missing():
        return
    if isinstance(cfg, DictConfig):
        if "_target_" in cfg:
            yield path, cfg
        for key in cfg:
            child = cfg._get_node(key)
            if isinstance(child, DictConfig | ListConfig):
                yield from _target_nodes(child, (*path, str(key)))
    elif isinstance(cfg, ListConfig):
        for i, child in enumerate(cfg):
            if isinstance(child, DictConfig | ListConfig):
                yield from _target_nodes(child, (*path, str(i)))


def _matches(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    return len(path) == len(pattern) and all(
        p in ("*", k) for k, p in zip(path, pattern, strict=True)
    )


def _parameters(target: type) -> set[str] | None:
    """The keyword arguments `target(...)` accepts, following **kwargs up the class's bases;
    None if it accepts any."""
    names: set[str] = set()
    for cls in target.__mro__:
        if "__init__" not in cls.__dict__:
            continue
        params = inspect.signature(cls.__init__).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return names - {"self"}
    return None


_MISSING = object()


def _select(cfg: DictConfig, key: str, resolve: bool = True) -> Any:
    """The value at `key` as plain data (_MISSING if there is none)."""
    try:
        node = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        if isinstance(node, DictConfig | ListConfig):
            return OmegaConf.to_container(node, resolve=resolve)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{key}: {e}") from None
    return node
