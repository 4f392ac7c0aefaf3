"""Each default once, each check once: the YAML and the code that reads it agree on every
default, and a run checks its config a single time."""

import dataclasses
import enum
import inspect
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import OmegaConf

from mtl import validation
from mtl.config import TrainConfig, cpu_precision

CONF = Path(__file__).resolve().parents[1] / "conf"
TYPED = {
    f.name: f.default_factory
    for f in dataclasses.fields(TrainConfig)
    if dataclasses.is_dataclass(f.default_factory)
}


def default_config() -> tuple[dict, dict]:
    """The default composition, resolved and as written (interpolations kept)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/unused"])
    written = OmegaConf.to_container(cfg, resolve=False)
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), written


def plain(value):
    return value.value if isinstance(value, enum.Enum) else value


@pytest.mark.parametrize("group", sorted(TYPED))
def test_every_dataclass_default_is_the_default_runs_value(group):
    resolved, written = default_config()
    defaults = dataclasses.asdict(TYPED[group]())
    assert set(defaults) == set(resolved[group]), "the schema and the composition hold other keys"
    for key, default in defaults.items():
        if isinstance(written[group][key], str) and "${" in written[group][key]:
            continue  # a path the `paths` group decides (cache_dir, root): not a default here
        assert resolved[group][key] == plain(default), f"{group}.{key}"


def test_top_level_defaults_agree():
    resolved, _ = default_config()
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            assert resolved[f.name] == f.default, f.name


def _target_nodes(node, path=()):
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for key, child in node.items():
            yield from _target_nodes(child, (*path, str(key)))


CONFIG_FILES = sorted(CONF.rglob("*.yaml"))


@pytest.mark.parametrize("file", CONFIG_FILES, ids=[str(p.relative_to(CONF)) for p in CONFIG_FILES])
def test_every_mtl_class_default_matches_its_yaml(file):
    """A value a config file gives an mtl class equals that class's own default, if it has
    one: the YAML documents a default, it never silently changes it."""
    for path, node in _target_nodes(yaml.safe_load(file.read_text()) or {}):
        if not node["_target_"].startswith("mtl."):
            continue
        cls = get_class(node["_target_"])
        owner = next(c for c in cls.__mro__ if "__init__" in c.__dict__)
        if not owner.__module__.startswith("mtl."):
            continue  # the settings of a library class (Lightning's progress bar, ...)
        parameters = inspect.signature(owner.__init__).parameters
        for key, value in node.items():
            parameter = parameters.get(key)
            if parameter is None or parameter.default is inspect.Parameter.empty:
                continue
            if isinstance(value, str) and "${" in value:
                continue  # follows another setting (early stopping follows the checkpoints)
            assert value == parameter.default, f"{'.'.join(path)}.{key}"


def test_a_run_checks_its_config_once(tmp_path, mtl_train, monkeypatch):
    calls = []
    check_keys = validation.check_keys
    monkeypatch.setattr(validation, "check_keys", lambda cfg: calls.append(1) or check_keys(cfg))
    args = ["encoder=tiny", "trainer.max_steps=2", "trainer.val_check_interval=2"]
    result = mtl_train(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("flags", "precision"),
    [("fpu avx2 avx512f avx512_bf16", "bf16-mixed"), ("fpu amx_bf16 amx_tile", "bf16-mixed"),
     ("fpu sse2 avx2 fma", "32-true")],
)  # fmt: skip
def test_the_cpu_trainer_uses_bf16_only_where_the_cpu_has_it(tmp_path, flags, precision):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert cpu_precision(str(cpuinfo)) == precision
    assert cpu_precision(str(tmp_path / "missing")) == "32-true"


def test_the_default_run_takes_the_cpus_precision():
    resolved, written = default_config()
    assert written["trainer"]["precision"] == "${mtl_cpu_precision:}"
    assert resolved["trainer"]["precision"] == cpu_precision()
