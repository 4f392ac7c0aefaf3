"""One "best": the checkpoint callback's monitor and mode decide every place that names it."""

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from mtl import trained
from mtl.best import Best
from mtl.errors import ConfigError
from mtl.train import job

CONF = Path(__file__).resolve().parents[1] / "conf"
RMSE = "val/demo_complexity/rmse"


def test_best_picks_the_first_best_finite_value_by_mode():
    entries = [{"m": 0.5}, {"m": math.nan}, {"m": 0.2}, {"m": 0.2}, {"m": 0.9}]
    assert Best("m", "min").pick(entries) is entries[2]  # ties: the earlier one
    assert Best("m", "max").pick(entries) is entries[4]
    assert Best("m", "max").pick([{"m": math.nan}, {}]) is None
    assert Best("m", "min").improves(0.1, 0.2) and not Best("m", "min").improves(0.2, 0.2)
    with pytest.raises(ConfigError, match=r"callbacks\.checkpoints\.mode: 'max' or 'min'"):
        Best("m", "lowest")


@pytest.mark.parametrize("mode", ["min", "max"])  # max: the worst RMSE, never val/score's best
def test_the_monitor_decides_checkpoint_metrics_table_stopping_test_and_sweep_value(
    tmp_path, capsys, mode
):
    run = tmp_path / "run"
    val = "${paths.data_dir}/demo/complexity/val.csv"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.output_dir={run}", "encoder=tiny", "trainer.max_steps=10",
                "trainer.val_check_interval=2", "optimizer.head_lr=0.05",
                f"callbacks.checkpoints.monitor={RMSE}", f"callbacks.checkpoints.mode={mode}",
                f"+task.demo_complexity.files.test={val}",  # the val rows again, as a test split
            ],
        )  # fmt: skip
    assert cfg.callbacks.early_stopping.monitor == RMSE
    assert cfg.callbacks.early_stopping.mode == mode

    value = job(cfg)

    metrics = json.loads((run / "metrics.json").read_text())
    trained_entries = [e for e in metrics["history"] if e["trained"]]
    rmse = [e[RMSE] for e in trained_entries]
    best_rmse = min(rmse) if mode == "min" else max(rmse)
    step = trained_entries[rmse.index(best_rmse)]["step"]
    assert metrics["best_step"] == step and metrics["best"][RMSE] == best_rmse
    assert metrics["best_by"] == {"monitor": RMSE, "mode": mode}
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True, map_location="cpu")
    assert best["global_step"] == step
    assert trained.load(run).info["step"] == step  # what predict/evaluate/export use
    # the test split holds the validation rows: the best checkpoint scores them as validation did
    assert metrics["test"]["test/demo_complexity/rmse"] == pytest.approx(best_rmse, rel=1e-4)
    assert value == best_rmse
    better = "lower" if mode == "min" else "higher"
    assert f"best step: {step} (by {RMSE}, {better} is better)" in capsys.readouterr().out


def test_the_sweeper_direction_follows_the_mode():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = ["hparams_search=optuna", "callbacks.checkpoints.mode=min"]
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == "minimize"
