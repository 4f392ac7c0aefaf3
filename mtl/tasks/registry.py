"""Task kinds by name: mtl's own and plug-ins.

A kind is a `Task` subclass registered with its spec by `@register_kind("name", Spec)`; a
spec's `type` names it. mtl's kinds register when `mtl.tasks` is imported. A plug-in kind is a
module of an installed package that registers it and names it in the package's entry points:

    [project.entry-points."mtl.task_kinds"]
    ordinal = "my_package.ordinal"   # the kind's name = the module that registers it

Entry points are read when a name is looked up that no imported module registered, and when
the config schema lists every kind (`all_kinds`). Reading a checkpoint imports nothing else:
the kind names it holds only choose among the installed entry points.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, TypeVar

from mtl.errors import ConfigError

if TYPE_CHECKING:
    from mtl.tasks.base import Task
    from mtl.tasks.spec import TaskSpec

GROUP = "mtl.task_kinds"
HOW_TO_REGISTER = (
    f"a plug-in kind is a module that registers it, named in an installed package's {GROUP!r} "
    "entry points (README.md: Adding a task kind)"
)
_KINDS: dict[str, type[Task]] = {}
T = TypeVar("T", bound="type[Task]")


def register_kind(name: str, spec_type: type[TaskSpec]) -> Callable[[T], T]:
    """Class decorator: the task kind `name`, configured by `spec_type`."""

    def register(cls: T) -> T:
        known = _KINDS.get(name)
        if known is not None and known is not cls:
            raise ConfigError(
                f"task kind {name!r} is registered twice: by {known.__module__}.{known.__name__}"
                f" and by {cls.__module__}.{cls.__name__}"
            )
        cls.kind, cls.spec_type = name, spec_type
        _KINDS[name] = cls
        return cls

    return register


def kind_named(name: str, key: str = "type") -> type[Task]:
    """The kind registered as `name`; an unknown name is an error naming `key`."""
    if name not in _KINDS:
        _load_plugins(name)
    if name not in _KINDS:
        raise ConfigError(
            f"{key}: unknown task kind {name!r} (known: {', '.join(all_kinds())}); "
            + HOW_TO_REGISTER
        )
    return _KINDS[name]


def all_kinds() -> dict[str, type[Task]]:
    """Every kind: mtl's own and those of the installed plug-ins, by name."""
    _load_plugins()
    return dict(_KINDS)


def _load_plugins(name: str | None = None) -> None:
    """Import the installed plug-ins of kinds not registered yet (only `name`'s if given)."""
    for point in entry_points(group=GROUP):
        if point.name in _KINDS or name not in (None, point.name):
            continue
        try:
            point.load()
        except Exception as e:  # a broken plug-in: say which, whatever it raised
            raise ConfigError(
                f"task kind {point.name!r}: its plug-in module {point.value!r} failed to "
                f"import ({type(e).__name__}: {e})"
            ) from e
        if point.name not in _KINDS:
            raise ConfigError(
                f"task kind {point.name!r}: its plug-in module {point.value!r} registers no "
                "kind of that name (@register_kind)"
            )
