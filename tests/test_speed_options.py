"""What makes training fast, through the real interface: a training step that reads no device
value between logs, token-budget batches, rounded batch widths, the compile switch, freed host
memory kept for reuse, and the debug configs (fast, overfit, profile)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from probes import read_trace

from mtl.host_memory import user_chose_allocator
from mtl.model import is_log_step

TINY = ["encoder=tiny", "trainer.max_steps=30", "trainer.val_check_interval=30"]


def test_training_steps_read_device_values_only_at_log_and_update_intervals(tmp_path, mtl_train):
    """On a GPU every tensor -> Python read waits for the device; between logging and the
    adaptive sampler's and DWA's update intervals, a step must not make one."""
    reads = tmp_path / "reads.json"
    result = mtl_train(
        *TINY, "trainer.log_every_n_steps=10", "sampler=dynamic", "sampler.update_every=10",
        "balancer=dwa", "balancer.period=10", f"hydra.run.dir={tmp_path}/run",
        "+callbacks.reads._target_=probes.HostReads", f"+callbacks.reads.path={reads}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    by_step = {int(step): sites for step, sites in json.loads(reads.read_text()).items()}
    reading = {s for s, sites in by_step.items() if any("mtl/data/" not in x for x in sites)}
    intervals = {s for s in range(30) if is_log_step(s, 10) or (s + 1) % 10 == 0}
    assert reading <= intervals, {s: by_step[s] for s in reading - intervals}
    assert len(reading) >= 3  # the log steps do read (the probe sees reads at all)
    assert "train/loss=" in result.stdout  # the progress bar (on stdout) still shows the loss


def traced_run(tmp_path, mtl_train, *overrides: str) -> tuple:
    """`python -m mtl.train` with the batch trace probe: (result, the trained batches' parts)."""
    trace = tmp_path / "trace"
    result = mtl_train(
        *overrides, f"hydra.run.dir={tmp_path}/run",
        "+callbacks.trace._target_=probes.BatchTrace", f"+callbacks.trace.path={trace}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result, [p for step in read_trace(trace) for p in step["parts"]]


def test_token_budget_batches_hold_more_short_rows(tmp_path, mtl_train):
    _, parts = traced_run(tmp_path, mtl_train, *TINY, "data.max_tokens=256")
    assert all(len(p["rows"]) * p["width"] <= 256 or len(p["rows"]) == 1 for p in parts)
    narrow = [len(p["rows"]) for p in parts if p["width"] <= 16]
    wide = [len(p["rows"]) for p in parts if p["width"] >= 32]
    assert narrow and wide and min(narrow) > max(wide)


def test_batch_widths_round_up_to_the_multiple(tmp_path, mtl_train):
    _, parts = traced_run(tmp_path, mtl_train, *TINY, "data.pad_to_multiple=16")
    widths = {p["width"] for p in parts}
    assert widths and all(w % 16 == 0 for w in widths)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.pad_to_multiple=24", "data.pad_to_multiple: must divide encoder.max_length=64"),
        ("encoder.compile=fast", "encoder.compile: must be null or one of default, reduce-over"),
    ],
)
def test_speed_settings_are_checked(tmp_path, mtl_train, override, message):
    result = mtl_train(*TINY, override, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_compiled_encoder_trains_and_its_checkpoint_predicts(tmp_path, mtl_train, run_module):
    run = tmp_path / "run"
    result = mtl_train(
        "encoder=tiny", "encoder.compile=default", "trainer.max_steps=6",
        "trainer.val_check_interval=6", f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["final"]["step"] == 6
    texts = tmp_path / "texts.txt"
    texts.write_text("Ein kurzer Satz.\nNoch einer, etwas länger als der erste.\n")
    predicted = run_module("mtl.predict", str(run), "--input", str(texts), "--format", "lines",
                           "--output", str(tmp_path / "out.jsonl"), cwd=tmp_path)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-2000:]  # plain parameter names
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


KEPT = """
import json
from memory_probe import freed_block_stays_mapped
from mtl.host_memory import keep_freed_memory
before = freed_block_stays_mapped()
print(json.dumps({"kept": keep_freed_memory(), "before": before, "after": freed_block_stays_mapped()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux")
@pytest.mark.parametrize("chosen", [{}, {"MALLOC_ARENA_MAX": "2"}])
def test_freed_host_memory_stays_for_reuse_unless_the_environment_chose_an_allocator(chosen):
    env = {k: v for k, v in os.environ.items() if not user_chose_allocator({k: v})}
    env |= {"PYTHONPATH": str(Path(__file__).parent), **chosen}
    result = subprocess.run([sys.executable, "-c", KEPT], env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    kept = json.loads(result.stdout)
    assert not kept["before"]  # glibc's default: a freed 48 MiB block goes back to the OS
    assert kept["kept"] == kept["after"] == (not chosen)


def test_an_allocator_the_user_chose_is_left_alone():
    assert user_chose_allocator({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"})
    assert user_chose_allocator({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert user_chose_allocator({"MALLOC_TRIM_THRESHOLD_": "0"})
    assert not user_chose_allocator({"GLIBC_TUNABLES": "glibc.rtld.nns=2", "PATH": "/bin"})


def test_training_process_keeps_freed_host_memory(tmp_path, mtl_train):
    kept = tmp_path / "kept.json"
    result = mtl_train(
        "encoder=tiny", "trainer.max_steps=1", "trainer.val_check_interval=1",
        f"hydra.run.dir={tmp_path}/run", "+callbacks.reuse._target_=probes.FreedMemoryReuse",
        f"+callbacks.reuse.path={kept}", cwd=tmp_path,
        subprocess=True,  # in this process, an earlier run's setting would already hold
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(kept.read_text()) is True


def test_debug_fast_trains_one_batch_per_task_and_validates_one(tmp_path, mtl_train):
    result, parts = traced_run(tmp_path, mtl_train, "debug=fast", "encoder=tiny")
    assert sorted(p["task"] for p in parts) == [
        "demo_complexity", "demo_sentiment"
    ]  # fmt: skip
    for loader in (0, 1):  # one validation loader per task, one batch of each
        assert f"Validation DataLoader {loader}: 100%|██████████| 1/1" in result.stdout


@pytest.mark.slow  # a minute: in CI's slow run, keeping the default run well under 15 minutes
def test_debug_overfit_memorizes_its_rows(tmp_path, mtl_train):
    run = tmp_path / "run"
    # a tiny random encoder needs a larger rate than the pretrained default's
    result = mtl_train("debug=overfit", "encoder=tiny", "optimizer.lr=1e-3",
                       f"hydra.run.dir={run}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    best = json.loads((run / "metrics.json").read_text())["best"]
    assert best["val/demo_sentiment/accuracy"] == 1.0
    assert best["val/demo_complexity/r2"] > 0.95


def test_debug_profile_prints_where_step_time_goes(tmp_path, mtl_train):
    result = mtl_train("debug=profile", "encoder=tiny", "trainer.max_steps=10", "trainer.val_check_interval=10",
                       f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = result.stdout + result.stderr
    for section in ("train_dataloader_next", "mtl: forward", "mtl: backward",
                    "mtl: optimizer step", "mtl: logging"):  # fmt: skip
        assert section in report
