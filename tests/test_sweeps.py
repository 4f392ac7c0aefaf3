"""Sweeps that scale out through Hydra's plugins: Optuna search, parallel local jobs, SLURM."""

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from mtl.validation import check_targets

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["encoder=tiny", "trainer.max_steps=2", "trainer.val_check_interval=2"]


def test_optuna_search_maximizes_the_returned_score(tmp_path, mtl_train):
    sweep = tmp_path / "sweep"
    result = mtl_train(
        "hparams_search=optuna", "hydra.sweeper.n_trials=3", *TINY, f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(trials) == 3
    scores = [json.loads((t / "metrics.json").read_text())["best"]["val/score"] for t in trials]
    found = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert found["best_value"] == max(scores)
    assert set(found["best_params"]) == {
        "optimizer.lr", "optimizer.head_lr", "optimizer.weight_decay", "data.batch_size"
    }  # fmt: skip
    assert not any("hparams_search" in t.name for t in trials)


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
def test_joblib_runs_two_jobs_at_once(tmp_path, mtl_train):
    meeting = tmp_path / "meeting"
    result = mtl_train(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY, "seed=0,1",
        "+callbacks.meet._target_=probes.Rendezvous", f"+callbacks.meet.folder={meeting}",
        f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path, subprocess=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [json.loads(line) for line in (meeting / "met.jsonl").read_text().splitlines()]
    assert len(jobs) == 2 and jobs[0]["pid"] != jobs[1]["pid"]
    assert all(job["met"] for job in jobs)  # both were running at once (one after another: no)
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert [n.split("_", 1)[0] for n in names] == ["0", "1"]
    assert "seed=0" in names[0] and "seed=1" in names[1]  # seed sweeps are told apart


def test_slurm_launcher_config_composes_to_submitit():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=["hydra/launcher=slurm", "paths.output_dir=/x"],
            return_hydra_config=True,
        )  # fmt: skip
    launcher = cfg.hydra.launcher
    assert (
        launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    )
    assert launcher.timeout_min == 240 and launcher.signal_delay_s == 120
    check_targets(cfg)  # an allowed place and kind for _target_
