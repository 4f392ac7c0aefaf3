"""The validated shape of the training config, registered with Hydra's ConfigStore.

`conf/train.yaml` starts from `train_schema`, so a misspelt key or a wrong type in any of the
typed groups (encoder, data, optimizer, scheduler) fails at composition, naming the key.

Task entries are plain mappings in the schema, so a whole task can be given on the command
line (`'+task.mine={type: regression, ...}'`); each task file starts from its kind's schema,
`schema/task/<kind>` (that kind's spec, typed: mtl/tasks/), so its keys can be overridden
without `+` and a key the kind does not have fails at composition. mtl/validation.py checks
every task, and every other group, before the run starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from mtl import ROOT
from mtl.cv import CVConfig
from mtl.data.loading import DataConfig
from mtl.errors import ConfigError
from mtl.model import OptimizerConfig, SchedulerConfig
from mtl.pretrained import EncoderConfig
from mtl.tasks import all_kinds
from mtl.transfer import TransferConfig


@dataclass
class DataSettings(DataConfig):
    root: str = "data"  # where real data sets live (MTL_DATA_ROOT); task files interpolate it


@dataclass
class TrainConfig:
    task: dict[str, Any] = field(default_factory=dict)  # name -> its kind's spec
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    data: DataSettings = field(default_factory=DataSettings)
    sampler: dict[str, Any] = field(default_factory=dict)
    balancer: dict[str, Any] = field(default_factory=dict)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)
    callbacks: dict[str, Any] = field(default_factory=dict)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    paths: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    resume: str | None = None  # a checkpoint (e.g. <run>/checkpoints/last.ckpt) to continue from
    resume_allow_changed_data: bool = False  # resume even if a data file changed since
    name: str = "demo"  # a label for the run: its directory under outputs/runs/


def dirname(overrides: str, limit: int = 200) -> str:
    """A sweep job's overrides as one safe directory name: file paths shortened to their last
    part, no '/', at most `limit` characters (file systems allow 255)."""
    short = re.sub(r"=(?:[^,=\[\]]*/)+([^,/=\[\]]*)", r"=\1", overrides)
    return short.replace("/", "_")[:limit]


def per_task(steps: int, *, _root_) -> int:
    """`${mtl_per_task:N}`: N steps for every task of the run, so with uniform sampling each
    task trains about N steps however many tasks there are (for fair single- vs multi-task)."""
    return int(steps) * len(_root_.task)


def sweep_name(name: str, overrides: list[str]) -> str:
    """`${mtl_sweep_name:${name},${hydra.overrides.task}}`: a sweep's directory name, the
    run's `name`, or `a+b` for a sweep over experiments (`-m experiment=a,b`)."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "experiment":
            return re.sub(r"[^\w.+-]", "", value.replace(",", "+"))
    return name


def direction(mode: str) -> str:
    """`${mtl_direction:max}`: a checkpoint mode as a sweeper's direction (maximize, minimize)."""
    if mode not in ("max", "min"):
        raise ConfigError(f"callbacks.checkpoints.mode: 'max' or 'min', got {mode!r}")
    return "maximize" if mode == "max" else "minimize"


def cpu_precision(cpuinfo: str = "/proc/cpuinfo") -> str:
    """`${mtl_cpu_precision:}`: bf16 autocast where the CPU computes bf16 natively (the
    avx512_bf16 or amx_bf16 flag), else fp32: without them bf16 is emulated, and a MiniLM
    training step took 12x as long as in fp32 (AVX2 only, 16 x 40 tokens: 12.3 s vs 1.0 s)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux: no flags to read
        return "32-true"
    native = re.search(r"^flags\s*:.*\b(avx512_bf16|amx_bf16)\b", text, re.MULTILINE)
    return "bf16-mixed" if native else "32-true"


def register() -> None:
    """Make the schema and the config resolvers known to Hydra (before composing)."""
    if not OmegaConf.has_resolver("mtl_root"):
        OmegaConf.register_new_resolver("mtl_root", lambda: str(ROOT))
        OmegaConf.register_new_resolver("mtl_dirname", dirname)
        OmegaConf.register_new_resolver("mtl_per_task", per_task)
        OmegaConf.register_new_resolver("mtl_sweep_name", sweep_name)
        OmegaConf.register_new_resolver("mtl_direction", direction)
        OmegaConf.register_new_resolver("mtl_cpu_precision", cpu_precision)
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    for name, kind in all_kinds().items():  # a task file starts from schema/task/<its kind>
        ConfigStore.instance().store(group="schema/task", name=name, node=kind.spec_type(name))
