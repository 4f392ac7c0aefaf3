"""End to end through the real interface: `python -m mtl.train` with Hydra overrides."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TASKS = ("demo_complexity", "demo_sentiment")
FAST = ["encoder=tiny", "trainer.max_steps=20", "trainer.val_check_interval=10"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, mtl_train):
    tmp = tmp_path_factory.mktemp("train")
    diagnostics = "callbacks.gradient_diagnostics.every_n_steps=10"
    result = mtl_train(*FAST, diagnostics, f"hydra.run.dir={tmp}/run", cwd=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run", result


def test_run_writes_metrics_file_and_prints_table(tiny_run):
    run, result = tiny_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["start"]["step"] == 0 and metrics["final"]["step"] == 20
    assert [e["step"] for e in metrics["history"]] == [0, 10, 20]
    for task in TASKS:
        assert f"{task}/" in result.stdout
    for key in ("rmse", "mae", "pearson", "spearman", "r2"):
        assert f"val/demo_complexity/{key}" in metrics["final"]
    for key in ("accuracy", "f1"):
        assert f"val/demo_sentiment/{key}" in metrics["final"]
    assert [e["trained"] for e in metrics["history"]] == [False, True, True]
    best = max(metrics["history"][1:], key=lambda e: e["val/score"])  # ModelCheckpoint's choices
    assert metrics["best"] == best and metrics["best_step"] == best["step"]
    assert "best checkpoint:" in result.stdout and f"tensorboard --logdir {run}" in result.stdout
    assert (run / ".hydra" / "config.yaml").is_file()


def test_tensorboard_has_per_task_metrics_sampler_and_learning_rates(tiny_run, scalars):
    run, _ = tiny_run
    tags = scalars(run)
    for task in TASKS:
        assert f"train/{task}/loss" in tags
        assert f"sampler/p/{task}" in tags
        assert any(t.startswith(f"val/{task}/") for t in tags)
    assert [e.step for e in tags["val/score"]] == [0, 10, 20]
    assert {"lr/encoder", "lr/heads/demo_complexity", "lr/heads/demo_sentiment"} <= set(tags)
    lr = [e.value for e in tags["lr/encoder"]]
    assert lr[0] == pytest.approx(1e-4 / 2) and lr[-1] < 1e-4  # warmup over 2 steps, then decay


def test_gradient_diagnostics_log_norms_cosines_and_heatmap(tiny_run, scalars):
    run, _ = tiny_run
    tags = scalars(run)
    pair = "grad/cos/demo_complexity~demo_sentiment"
    assert [e.step for e in tags[pair]] == [10, 20]
    assert all(-1 <= e.value <= 1 for e in tags[pair])
    assert all(e.value > 0 for t in TASKS for e in tags[f"grad/norm/{t}"])
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert "grad/cosine" in events.Tags()["images"]


def test_best_checkpoint_loads_as_data(tiny_run):
    run, _ = tiny_run
    ckpt = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert any(k.startswith("heads.demo_sentiment.") for k in ckpt["state_dict"])
    assert not list((run / "checkpoints").glob("*.tmp"))


def test_a_run_ending_between_validations_keeps_its_final_state_as_best(tmp_path, mtl_train):
    """The validation after the last step (3, not a multiple of 10) is the only one in
    training: its state is the best checkpoint, which test scoring and predict read."""
    run = tmp_path / "run"
    short = ["encoder=tiny", "trainer.max_steps=3", "trainer.val_check_interval=10"]
    result = mtl_train(*short, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best_step"] == 3 and metrics["best_checkpoint"] == str(
        run / "checkpoints/best.ckpt"
    )
    best = torch.load(run / "checkpoints/best.ckpt", weights_only=True)
    assert best["global_step"] == 3
    assert (run / "checkpoints/best.ckpt").samefile(run / "checkpoints/last.ckpt")


def test_existing_run_directory_is_not_overwritten(tiny_run, mtl_train):
    run, _ = tiny_run
    files = [
        run / "metrics.json",
        run / ".hydra" / "config.yaml",
        run / ".hydra" / "overrides.yaml",
    ]
    before = [f.read_bytes() for f in files]
    result = mtl_train(*FAST, "seed=1", f"hydra.run.dir={run}", cwd=run.parent)
    assert result.returncode != 0
    assert f"{run} already holds a run; refusing to overwrite it" in result.stderr
    assert [f.read_bytes() for f in files] == before
    sweep = mtl_train("-m", *FAST, f"hydra.sweep.dir={run}", cwd=run.parent)
    assert sweep.returncode != 0 and "hydra.sweep.dir" in sweep.stderr


def test_multirun_over_samplers_gives_one_run_directory_each(tmp_path, sweep, scalars):
    jobs = sweep(tmp_path, "sampler=uniform,proportional,temperature")
    assert len(jobs) == 3
    samplers = ["uniform", "proportional", "temperature"]
    for i, (job, name) in enumerate(zip(jobs, samplers, strict=True)):
        assert job.name.startswith(f"{i}_") and f"sampler={name}" in job.name
    for job, target in zip(jobs, ["Uniform", "Proportional", "Temperature"], strict=True):
        assert f"mtl.sampling.{target}Sampler" in (job / ".hydra" / "config.yaml").read_text()
        assert "sampler/p/demo_sentiment" in scalars(job)
        assert (job / "metrics.json").is_file()


@pytest.fixture
def bad_task(tmp_path):
    """A task config on the search path whose CSV has an empty text on line 3."""
    (tmp_path / "bad.csv").write_text("text,label\ngut,pos\n,neg\nschlecht,neg\nok,pos\n")
    (tmp_path / "conf" / "task").mkdir(parents=True)
    (tmp_path / "conf" / "task" / "bad.yaml").write_text(
        f"bad:\n  type: classification\n  files: {{train: {tmp_path}/bad.csv, "
        f"val: {tmp_path}/bad.csv}}\n"
    )
    return [f"hydra.searchpath=[file://{tmp_path}/conf]", "task=[bad]", *FAST]


def test_bad_row_stops_with_file_line_and_column(tmp_path, bad_task, mtl_train):
    result = mtl_train(*bad_task, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 1
    assert f"{tmp_path}/bad.csv:3: column 'text': text is empty" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sampler.temperature=-1", "sampler.temperature must be > 0"),
        ("balancer=pcgrad data.tasks_per_step=1", "needs several tasks per step"),
        ("sampler=dynamic data.num_workers=4", "sampler.lag: 8 is below the 9 batches"),
        ("encoder.pooling=max", r"Invalid value 'max', expected one of \[cls, mean\]"),
        ("encoder.text_prefix=''", "encoder.text_prefix: must be a non-empty string or null"),
        ("data.on_bad_row=skp", r"Invalid value 'skp', expected one of \[error, skip\]"),
        ("scheduler.decay=cosine", r"Invalid value 'cosine', expected one of \[linear, constant\]"),
        ("encoder.freeze_layers=5", "encoder: cannot freeze 5 layers of a 2-layer encoder"),
    ],
)
def test_bad_settings_stop_with_the_key_named(tmp_path, mtl_train, override, message):
    result = mtl_train(*FAST, *override.split(), f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 1
    assert re.search(message, result.stderr), result.stderr[-2000:]
    if message.startswith("Invalid value"):  # refused when the config is composed
        assert f"full_key: {override.split('=')[0]}" in result.stderr
    assert "Traceback" not in result.stderr


def test_skip_reports_the_count_and_trains(tmp_path, bad_task, mtl_train):
    result = mtl_train(
        *bad_task, "data.on_bad_row=skip", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    assert "task bad: skipped 1 bad rows of its train split (first: " in log
    assert "task bad: skipped 1 bad rows of its val split (first: " in log
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["skipped_rows"] == {"bad": 2}  # line 3 in the train file and in the val file
    assert "training rows" in log and "task bad: 3 training rows" in log


@pytest.mark.slow  # in CI's slow run: test_balancing tests each balancer, DWA's CLI run below
def test_multirun_over_balancers_logs_their_weights(tmp_path, sweep, scalars):
    jobs = sweep(
        tmp_path, "balancer=static,uncertainty,dwa,rlw,pcgrad", "data.tasks_per_step=2",
        "task.demo_sentiment.loss_weight=0.5",
    )  # fmt: skip
    assert len(jobs) == 5
    weights = {}
    for job in jobs:
        tags = scalars(job)
        assert all(len(tags[f"train/{t}/loss"]) == 2 for t in TASKS)  # both tasks every step
        weights[job.name.split("=")[1].split(",")[0]] = [
            tags[f"balancer/w/{t}"][-1].value for t in TASKS
        ]
    assert weights["static"] == [1.0, 0.5] == weights["pcgrad"]  # the tasks' loss_weight
    assert weights["dwa"] == [1.0, 0.5]  # DWA's first two periods (50 steps each) weigh 1
    assert weights["uncertainty"][0] != 0.5  # 1/(2σ²) starts at 0.5; σ learned since
    assert weights["rlw"] != [1.0, 0.5]
    assert weights["rlw"][0] + 2 * weights["rlw"][1] == pytest.approx(2.0)  # K·softmax(z)


def test_dwa_weights_follow_the_logged_task_losses(tmp_path, mtl_train, scalars):
    """DWA with 1-step periods: after step 1, w_i = 2·softmax(r_i / T), r_i = L_i(1) / L_i(0),
    computed here from the losses the run logged."""
    result = mtl_train(
        "encoder=tiny", "balancer=dwa", "balancer.period=1", "balancer.temperature=0.5",
        "data.tasks_per_step=2", "trainer.max_steps=3", "trainer.log_every_n_steps=1",
        f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    tags = scalars(tmp_path / "run")
    for step in (1, 2):
        r = [tags[f"train/{t}/loss"][step].value / tags[f"train/{t}/loss"][step - 1].value
             for t in TASKS]  # fmt: skip
        e = [math.exp(x / 0.5) for x in r]
        expected = [2 * x / sum(e) for x in e]
        logged = [tags[f"balancer/w/{t}"][step].value for t in TASKS]
        assert logged == pytest.approx(expected, rel=1e-5)
    assert [tags[f"balancer/w/{t}"][0].value for t in TASKS] == [1.0, 1.0]


def test_console_script_lists_config_groups(tmp_path):
    script = Path(sys.executable).parent / "mtl-train"
    result = subprocess.run([script, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sampler: annealed, curriculum, dynamic, fixed" in result.stdout
    assert "task: complexity_de, demo_complexity, demo_mlm, demo_multilabel" in result.stdout
