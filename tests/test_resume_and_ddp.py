"""Exact resume and 2-process DDP, through `python -m mtl.train`."""

import json
import sys
from pathlib import Path

import pytest
import torch
from probes import read_trace

ADAPTIVE = [  # stateful sampler and balancer, so their state must travel in the checkpoint
    "encoder=tiny",
    "sampler=dynamic",
    "sampler.update_every=2",
    "sampler.lag=1",
    "balancer=dwa",
    "balancer.period=3",
    "trainer.max_steps=12",
    "trainer.val_check_interval=6",
]


def trace(tmp_path: Path) -> list[str]:
    return ["+callbacks.trace._target_=probes.BatchTrace", f"+callbacks.trace.path={tmp_path}"]


def snapshots(every: int) -> list[str]:
    return [
        "+callbacks.snapshots._target_=pytorch_lightning.callbacks.ModelCheckpoint",
        "+callbacks.snapshots.dirpath=${paths.output_dir}/snapshots",
        f"+callbacks.snapshots.every_n_train_steps={every}",
        "+callbacks.snapshots.save_top_k=-1",
    ]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


def test_stop_and_resume_reproduces_the_uninterrupted_run(tmp_path, mtl_train):
    full = mtl_train(*ADAPTIVE, *snapshots(4), *trace(tmp_path / "full_trace"),
                     f"hydra.run.dir={tmp_path}/full", cwd=tmp_path)  # fmt: skip
    assert full.returncode == 0, full.stderr[-3000:]
    snapshot = next((tmp_path / "full" / "snapshots").glob("*step=4.ckpt"))
    resumed = mtl_train(*ADAPTIVE, f"resume='{snapshot}'", *trace(tmp_path / "resumed_trace"),
                        f"hydra.run.dir={tmp_path}/resumed", cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    uninterrupted = read_trace(tmp_path / "full_trace")
    continued = read_trace(tmp_path / "resumed_trace")
    assert [r["step"] for r in continued] == list(range(4, 12))
    assert continued == uninterrupted[4:]  # same tasks, same rows, step by step
    history = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["history"]
    assert [e["step"] for e in history] == [0, 6, 12]  # carried over from the stopped run
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=0, equal_nan=True), key  # bitwise


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
def test_a_sweep_job_resumes_by_its_directory(tmp_path, mtl_train, sweep):
    [job] = sweep(tmp_path, "seed=0")  # its directory, 0_seed=0, holds Hydra's reserved '='
    more = mtl_train(f"resume={job}", "trainer.max_steps=4", cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-3000:]
    history = json.loads((job / "metrics.json").read_text())["history"]
    assert [e["step"] for e in history] == [0, 2, 4]
    last = job / "checkpoints" / "last.ckpt"  # a checkpoint file under such a directory too
    again = mtl_train(f"resume={last}", "trainer.max_steps=6", f"hydra.run.dir={tmp_path}/again",
                      "encoder=tiny", "trainer.val_check_interval=2", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "again/metrics.json").read_text())["final"]["step"] == 6


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
@pytest.mark.skipif(sys.platform != "linux", reason="DDP on CPU is exercised on Linux (gloo)")
def test_two_process_ddp_same_task_disjoint_shards(tmp_path, mtl_train):
    result = mtl_train(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "encoder=tiny",
        "sampler=dynamic",  # adaptive: both ranks must see the same (all-reduced) losses
        "sampler.update_every=2",
        "sampler.lag=1",
        "trainer.max_steps=10",
        "trainer.val_check_interval=5",
        *trace(tmp_path / "trace"),
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
        subprocess=True,  # the ranks are processes
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = read_trace(tmp_path / "trace", 0), read_trace(tmp_path / "trace", 1)
    assert [r["step"] for r in rank0] == [r["step"] for r in rank1] == list(range(10))
    seen = {0: {}, 1: {}}
    for r0, r1 in zip(rank0, rank1, strict=True):
        assert [p["task"] for p in r0["parts"]] == [p["task"] for p in r1["parts"]]
        for rank, record in ((0, r0), (1, r1)):
            for part in record["parts"]:
                seen[rank].setdefault(part["task"], set()).update(part["rows"])
    for task in seen[0]:  # 10 steps are less than one pass: shards never overlap
        assert seen[0][task] and not seen[0][task] & seen[1].get(task, set())
    assert (tmp_path / "run" / "metrics.json").is_file()
