"""Proving the transfer: transfer modes, auxiliary tasks in the score, the GermEval metric,
reports of sweeps, TensorBoard's HParams and the gradient heatmap."""

import csv
import json
import math
import statistics

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mtl.diagnostics import cosine_figure
from mtl.frozen import load_checkpoint
from mtl.report import find_runs
from mtl.tasks import mapped_rmse

TINY = ["encoder=tiny", "trainer.max_steps=6", "trainer.val_check_interval=3"]
PROBE = "+callbacks.initial._target_=probes.InitialWeights"


def train(mtl_train, tmp_path, *args):
    run = tmp_path / "run"
    result = mtl_train(*TINY, *args, PROBE, f"+callbacks.initial.path={tmp_path}/start.safetensors",
                       f"hydra.run.dir={run}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    start = load_file(tmp_path / "start.safetensors")
    end = load_checkpoint(run / "checkpoints/last.ckpt")["state_dict"]  # frozen weights too
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    return run, changed


def test_feature_extraction_trains_heads_on_cached_vectors(mtl_train, tmp_path):
    run, changed = train(mtl_train, tmp_path, "transfer=feature_extraction")
    assert changed and all(k.startswith("heads.") for k in changed)  # the encoder never moved
    log = (run / "train.log").read_text()
    assert "demo_complexity/train: 2000 sentence vectors cached" in log


def test_gradual_unfreezing_trains_the_top_layer_first(mtl_train, tmp_path):
    run, changed = train(mtl_train, tmp_path, "transfer=gradual_unfreezing",
                         "transfer.unfreeze_every=100")  # fmt: skip
    encoder = {k.split(".")[1] + "." + k.split(".")[2] if k.startswith("encoder.layers")
               else k.split(".")[1] for k in changed if k.startswith("encoder.")}  # fmt: skip
    assert encoder == {"layers.1"}  # the tiny encoder's top layer alone, in 6 < 100 steps


def test_probe_then_finetune_trains_the_heads_alone_first(mtl_train, tmp_path):
    probed, finetuned = tmp_path / "probe", tmp_path / "lpft"
    probed.mkdir()
    finetuned.mkdir()
    _, changed = train(mtl_train, probed, "transfer=probe_then_finetune",
                       "transfer.probe_steps=6")  # fmt: skip
    assert changed and all(k.startswith("heads.") for k in changed)  # 6 steps of the heads alone
    run, changed = train(mtl_train, finetuned, "transfer=probe_then_finetune",
                         "transfer.probe_steps=3")  # fmt: skip
    groups = {k.split(".")[1] if "layers" not in k else ".".join(k.split(".")[1:3])
              for k in changed if k.startswith("encoder.")}  # fmt: skip
    assert groups == {"embeddings", "layers.0", "layers.1"}  # all of it after step 3
    log = (run / "train.log").read_text()
    assert "the heads train alone on the frozen encoder until step 3" in log
    assert "step 3: the top 3 of 3 encoder groups train" in log
    waited = mtl_train(*TINY, "transfer=probe_then_finetune", "transfer.probe_steps=3",
                       "trainer.max_steps=8", "trainer.val_check_interval=1",
                       "callbacks.early_stopping.patience=1",
                       "callbacks.early_stopping.min_delta=100",  # no validation improves
                       f"hydra.run.dir={tmp_path}/waited", cwd=tmp_path)  # fmt: skip
    assert waited.returncode == 0, waited.stderr[-3000:]
    history = json.loads((tmp_path / "waited/metrics.json").read_text())["history"]
    assert history[-1]["step"] == 5  # counted from step 4 (the first after the probe), not 1
    cached = mtl_train(*TINY, "transfer=feature_extraction", "transfer.probe_steps=3",
                       f"hydra.run.dir={tmp_path}/bad", cwd=tmp_path)  # fmt: skip
    assert cached.returncode == 1
    assert "transfer.probe_steps: feature extraction trains the heads on cached" in cached.stderr


@pytest.mark.parametrize("mode", ["feature_extraction", "probe_then_finetune"])
def test_pcgrad_trains_a_frozen_encoders_heads(mtl_train, tmp_path, mode):
    probe = ["transfer.probe_steps=3"] if mode == "probe_then_finetune" else []
    _, changed = train(mtl_train, tmp_path, f"transfer={mode}", *probe, "balancer=pcgrad",
                       "data.tasks_per_step=2")  # fmt: skip
    heads = {k.split(".")[1] for k in changed if k.startswith("heads.")}
    assert heads == {"demo_complexity", "demo_sentiment"}  # summed losses while nothing is shared
    assert any(k.startswith("encoder.") for k in changed) == bool(probe)


def test_partial_freezing_keeps_embeddings_and_bottom_layers(mtl_train, tmp_path):
    _, changed = train(mtl_train, tmp_path, "transfer=partial", "encoder.freeze_layers=-1")
    assert any(k.startswith("encoder.layers.1.") for k in changed)
    assert not any(k.startswith(("encoder.layers.0.", "encoder.embeddings.")) for k in changed)


def test_keep_layers_drops_the_top_layers_for_training_and_prediction(
    mtl_train, run_module, tmp_path
):
    run, changed = train(mtl_train, tmp_path, "encoder.keep_layers=1", "task=[demo_complexity]")
    state = torch.load(run / "checkpoints/best.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("encoder.layers.0.") for k in state)
    assert not any(k.startswith("encoder.layers.1.") for k in state)  # the tiny encoder has 2
    assert any(k.startswith("encoder.layers.0.") for k in changed)
    texts = tmp_path / "texts.txt"
    texts.write_text("Ein kurzer Satz.\nNoch einer, etwas länger als der erste Satz.\n")
    out = tmp_path / "predictions.csv"
    predicted = run_module(
        "mtl.predict", str(run), "--input", str(texts), "--output", str(out), cwd=tmp_path
    )
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert len(out.read_text().splitlines()) == 3  # header + one row per text
    too_many = mtl_train(*TINY, "encoder.keep_layers=3", f"hydra.run.dir={tmp_path}/bad",
                         cwd=tmp_path)  # fmt: skip
    assert too_many.returncode == 1
    assert "encoder.keep_layers: must be between 1 and the encoder's 2 layers, got 3" in (
        too_many.stderr
    )
    assert (
        not list((tmp_path / "bad").glob("*.json")) and not (tmp_path / "bad/checkpoints").exists()
    )


def test_layer_decay_scales_each_layers_learning_rate(mtl_train, tmp_path, scalars):
    run, _ = train(mtl_train, tmp_path, "transfer=layer_decay", "optimizer.layer_decay=0.5")
    tags = scalars(run)
    top = tags["lr/encoder/layer1"][-1].value
    assert tags["lr/encoder/layer0"][-1].value == pytest.approx(top * 0.5)
    assert tags["lr/encoder/embeddings"][-1].value == pytest.approx(top * 0.25)


def test_an_auxiliary_task_is_reported_but_not_scored(mtl_train, tmp_path):
    run, _ = train(mtl_train, tmp_path, "task.demo_sentiment.score_weight=0")
    metrics = json.loads((run / "metrics.json").read_text())
    for entry in metrics["history"]:
        assert entry["val/score"] == entry["val/demo_complexity/score"]
        assert "val/demo_sentiment/f1" in entry and "val/demo_sentiment/score" in entry


def test_mapped_rmse_is_the_cubic_least_squares_fit():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 1, 400)
    y = 1 + 0.4 * x**2 - 0.05 * x**3 + rng.normal(0, 0.3, 400)
    fit = np.polyval(np.polyfit(x, y, 3), x)
    expected = math.sqrt(np.mean((fit - y) ** 2))
    assert float(mapped_rmse(torch.tensor(x), torch.tensor(y))) == pytest.approx(expected, rel=1e-9)
    plain = math.sqrt(np.mean((x - y) ** 2))
    assert expected < plain  # a calibration the mapping forgives


def test_report_table_matches_the_runs(sweep, run_module, tmp_path):
    jobs = sweep(tmp_path, "trainer.max_steps=4", "seed=0,1,2")
    result = run_module("mtl.report", str(tmp_path / "sweep"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "## Runs" in result.stdout and "## Over seeds" in result.stdout
    with (tmp_path / "sweep/report/runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and [r["seed"] for r in rows] == ["0", "1", "2"]
    for job, row in zip(jobs, rows, strict=True):
        metrics = json.loads((job / "metrics.json").read_text())
        assert float(row["best score"]) == pytest.approx(metrics["best"]["val/score"])
        assert float(row["final score"]) == pytest.approx(metrics["final"]["val/score"])
        assert float(row["demo_sentiment best"]) == pytest.approx(
            metrics["best"]["val/demo_sentiment/score"]
        )
        assert int(row["best step"]) == metrics["best_step"]
    for png in ("validation_curves.png", "final_scores.png"):
        with Image.open(tmp_path / "sweep/report" / png) as image:
            gray = image.convert("L")
            assert gray.size[0] > 400 and len(set(gray.getdata())) > 20  # drawn, not blank


def test_report_pools_cross_validations_over_seeds(run_module, tmp_path):
    pooled = {("complexity_cv", 0): 0.78, ("complexity_cv", 1): 0.76, ("complexity_aux", 0): 0.70,
              ("complexity_aux", 1): 0.74}  # fmt: skip
    for (experiment, seed), rmse in pooled.items():  # two settings x two seeds, as mtl writes them
        run = tmp_path / "runs" / f"{experiment}_{seed}"
        (run / ".hydra").mkdir(parents=True)
        overrides = [f"experiment={experiment}", f"seed={seed}", f"paths.log_dir=/x{seed}"]
        (run / ".hydra/overrides.yaml").write_text("\n".join(f"- {o}" for o in overrides))
        metrics = {"test/c/rmse": rmse, "test/c/rmse_mapped": rmse - 0.01, "test/c/score": -rmse}
        cv = {"task": "c", "folds": 2, "mean": metrics, "std": dict.fromkeys(metrics, 0.0),
              "pooled": metrics, "pooled_score": -rmse}  # fmt: skip
        (run / "cv.json").write_text(json.dumps(cv))
        for fold, seconds in enumerate((10.5, 20.0)):
            (run / f"fold{fold}").mkdir()
            (run / f"fold{fold}/metrics.json").write_text(json.dumps({"train_seconds": seconds}))
    result = run_module("mtl.report", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.split("## Cross-validation over seeds")[1]
    assert "| setting | seeds | pooled rmse | pooled rmse_mapped |" in table
    sd = statistics.stdev  # paths.log_dir says where a run went, so it does not split settings
    assert f"| experiment=complexity_aux | 2 | 0.7200 ± {sd([0.70, 0.74]):.4f} | 0.7100 ±" in table
    assert f"| experiment=complexity_cv | 2 | 0.7700 ± {sd([0.78, 0.76]):.4f} | 0.7600 ±" in table
    for run in find_runs([tmp_path / "runs"]):  # a CV's result (bars, gains): its pooled score
        assert run.task_score("c", "final") == -pooled[(run.overrides["experiment"], int(run.seed))]
    with (tmp_path / "runs/report/runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {float(row["train s"]) for row in rows} == {30.5}  # all folds'
    for row in rows:  # not fold 0's scores as if they were the run's: its pooled score alone
        assert row["status"] == "2 folds" and math.isnan(float(row["best score"]))
        assert float(row["cv pooled score"]) in {-v for v in pooled.values()}


def test_report_skips_a_metrics_file_that_is_not_a_runs(run_module, tmp_path):
    (tmp_path / "runs/eval").mkdir(parents=True)  # an evaluation's output, named metrics.json
    (tmp_path / "runs/eval/metrics.json").write_text('{"model": "x", "val/score": 0.5}')
    result = run_module("mtl.report", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 1
    assert f"skipped {tmp_path / 'runs/eval/metrics.json'}: not a run's" in result.stderr
    assert f"error: {tmp_path / 'runs'}: no runs here" in result.stderr


def test_tensorboard_hparams_hold_results(tmp_path, mtl_train):
    result = mtl_train(*TINY, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    events = EventAccumulator(str(tmp_path / "run/tensorboard"))
    events.Reload()
    hparams = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hparams)
    experiment = hparams["_hparams_/experiment"].decode("latin-1")
    assert "hparams/best/score" in experiment and "hparams/final/demo_complexity/rmse" in experiment
    assert "optimizer/lr" in experiment


def test_gradient_heatmap_names_tasks_and_values():
    figure = cosine_figure(torch.tensor([[1.0, -0.5], [-0.5, 1.0]]), ["alpha", "beta"])
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["alpha", "beta"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["alpha", "beta"]
    assert sorted(t.get_text() for t in ax.texts) == ["-0.50", "-0.50", "1.00", "1.00"]
    image = ax.images[0]
    blue, red = image.cmap(image.norm(1.0)), image.cmap(image.norm(-1.0))
    assert blue[2] > blue[0] and red[0] > red[2]  # +1 blue (aligned), -1 red (conflicting)
    assert len(figure.axes) == 2  # the colour scale
