"""Slow end-to-end runs (`pytest -m slow`): the embedded default and the real experiment."""

import json
import re

import pytest

pytestmark = pytest.mark.slow


def test_default_run_improves_both_demo_tasks(tmp_path, mtl_train, scalars):
    """`python -m mtl.train` with no arguments: MiniLM learns both demo tasks."""
    result = mtl_train(f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    start, final = metrics["start"], metrics["final"]
    assert final["val/demo_complexity/r2"] > start["val/demo_complexity/r2"] + 0.3
    assert final["val/demo_complexity/pearson"] > 0.7
    assert final["val/demo_sentiment/f1"] > start["val/demo_sentiment/f1"] + 0.2
    tags = scalars(tmp_path / "run")
    for task in ("demo_complexity", "demo_sentiment"):
        assert {f"train/{task}/loss", f"sampler/p/{task}"} <= set(tags)


def test_complexity_sentiment_experiment_runs_on_real_files(
    tmp_path, monkeypatch, mtl_train, shared_data
):
    monkeypatch.setenv("MTL_DATA_ROOT", str(shared_data))
    result = mtl_train(
        "experiment=complexity_sentiment",
        "trainer.max_steps=60",
        "trainer.val_check_interval=30",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]
    assert final["step"] == 60
    expected = {"val/complexity_de/rmse", "val/complexity_de/pearson", "val/sst2/accuracy"}
    assert expected <= set(final)
    log = (tmp_path / "run" / "train.log").read_text()
    rows = {m[0]: int(m[1]) for m in re.findall(r"task (\w+): (\d+) training rows", log)}
    assert rows["sst2"] == 67349
    assert 700 <= rows["complexity_de"] <= 800  # 20% of the articles (whole ones) held out
