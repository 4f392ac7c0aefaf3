"""Task specs from a config or a checkpoint, each typed by its kind's spec and checked; fitted
tasks from what a checkpoint recorded."""

from __future__ import annotations

import dataclasses
import logging

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtl.errors import ConfigError, require_known
from mtl.tasks.base import Task
from mtl.tasks.registry import all_kinds, kind_named
from mtl.tasks.spec import TaskSpec
from mtl.tasks.text_stats import TextFeatures

log = logging.getLogger(__name__)

# Checkpoints written before each kind had its own spec store every kind's keys, with these
# defaults where a task left them unset. A kind never read the keys it does not have, so they
# are dropped on reading (with a warning where one was set): the model is the same without them.
# A key a kind does have, at this default, means the kind's own default (loss: null -> mse).
UNION_DEFAULTS: dict[str, object] = {
    "label_column": "label",
    "label_columns": None,
    "labels": None,
    "label_delimiter": ";",
    "threshold": 0.5,
    "range": None,
    "loss": None,
    "mapped_rmse": False,
    "mask_probability": 0.15,
}


def parse_task_specs(tasks: DictConfig | dict) -> dict[str, TaskSpec]:
    """Validate every `task.<name>` entry against its kind's spec; errors name the key."""
    if not tasks:
        raise ConfigError("no tasks selected: choose at least one, e.g. task=[demo_complexity]")
    if isinstance(tasks, DictConfig):
        try:
            tasks = OmegaConf.to_container(tasks, resolve=True)  # type: ignore[assignment]
        except OmegaConfBaseException as e:
            raise ConfigError(f"task.{getattr(e, 'full_key', '?')}: {e.msg}") from None
    specs = {name: parse_spec(name, raw) for name, raw in tasks.items()}
    _default_score_weights(specs)
    return specs


def parse_spec(name: str, raw: object) -> TaskSpec:
    """One task's entry as its kind's spec, checked."""
    if not isinstance(raw, dict):
        raise ConfigError(f"task.{name}: expected a mapping of task keys, got {raw!r:.60}")
    if raw.get("type") in (None, MISSING):
        raise ConfigError(f"task.{name}.type: missing; one of {', '.join(all_kinds())}")
    kind = kind_named(str(raw["type"]), f"task.{name}.type")
    own = [f.name for f in dataclasses.fields(kind.spec_type)]
    require_known(raw, own, f"task.{name}.", f" of {kind.kind} tasks")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(kind.spec_type), raw)
        spec: TaskSpec = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", None) or "?"
        raise ConfigError(f"task.{name}.{key}: {e.msg if hasattr(e, 'msg') else e}") from None
    kind.check_spec(name, spec)
    return spec


def stored_tasks(described: dict[str, dict]) -> dict[str, Task]:
    """The fitted tasks a checkpoint or export recorded: `{name: {"spec", "state"}}`."""
    specs = parse_task_specs({n: _own_keys(n, d["spec"]) for n, d in described.items()})
    return {name: task_from_state(name, spec, described[name]["state"])
            for name, spec in specs.items()}  # fmt: skip


def task_from_state(name: str, spec: TaskSpec, state: dict) -> Task:
    """A fitted task as a checkpoint recorded it (`Task.state()`), text statistics included."""
    task = kind_named(spec.type, f"task.{name}.type").from_state(name, spec, state)
    if "text_features" in state:
        features = TextFeatures.from_state(state["text_features"])
        task = dataclasses.replace(task, text_features=features)
    return task


def _own_keys(name: str, raw: dict) -> dict:
    """A stored spec without the keys of other kinds that older checkpoints hold."""
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        return raw  # parse_spec names the problem
    kind = kind_named(raw["type"], f"task.{name}.type")
    own = {f.name for f in dataclasses.fields(kind.spec_type)}
    kept = {}
    for key, value in raw.items():
        if key in UNION_DEFAULTS and value == UNION_DEFAULTS[key]:
            continue  # unset in the old spec: the kind's own default applies
        if key in own or key not in UNION_DEFAULTS:
            kept[key] = value
        else:
            log.warning("task %s: the checkpoint sets %s=%r, which a %s task does not use; "
                        "ignored", name, key, value, raw["type"])  # fmt: skip
    return kept


def _default_score_weights(specs: dict[str, TaskSpec]) -> None:
    """Fill in unset score weights: each kind's default (mlm: 0, an auxiliary task), except
    that tasks which would all weigh 0 (masked LM alone) weigh 1. Explicit zeros stay."""
    weights = {name: kind_named(s.type).score_weight_of(s) for name, s in specs.items()}
    alone = not any(w > 0 for w in weights.values())
    if alone and all(spec.score_weight is not None for spec in specs.values()):
        raise ConfigError("task.*.score_weight: at least one task needs a score_weight > 0")
    for name, spec in specs.items():
        if spec.score_weight is None:
            spec.score_weight = 1.0 if alone else weights[name]
