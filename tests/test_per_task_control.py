"""Per-task control through `python -m mtl.train` on the demo tasks: learning rates, batch
sizes and lengths per task, per-task early stopping, gradient accumulation across tasks, and
PCGrad under DDP."""

import copy
import csv
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from probes import read_trace
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from mtl.balancing import StaticBalancer
from mtl.feedback import TaskStopping
from mtl.tasks import ClassificationTask, RegressionTask, TaskSpec

TINY = ["encoder=tiny", "trainer.log_every_n_steps=1"]
DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


def trace(path: Path) -> list[str]:
    return ["+callbacks.trace._target_=probes.BatchTrace", f"+callbacks.trace.path={path}"]


def checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_per_task_learning_rates_batch_sizes_and_lengths(mtl_train, scalars, tmp_path):
    result = mtl_train(
        *TINY, "trainer.max_steps=12", "trainer.val_check_interval=12",
        "task.demo_sentiment.lr_scale=0.25", "task.demo_complexity.encoder_lr_scale=0.5",
        "task.demo_complexity.batch_size=4", "task.demo_sentiment.batch_size=8",
        "task.demo_complexity.max_length=12", *trace(tmp_path / "t"),
        f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    tags = scalars(tmp_path / "run")
    steps = read_trace(tmp_path / "t")
    for s, record in enumerate(steps):
        task = record["parts"][0]["task"]
        heads = tags["lr/heads/demo_complexity"][s].value
        assert tags["lr/heads/demo_sentiment"][s].value == pytest.approx(0.25 * heads)
        scale = 0.5 if task == "demo_complexity" else 1.0  # the encoder's rate at this step
        assert tags["lr/encoder"][s].value == pytest.approx(1e-4 / 1e-3 * heads * scale)
        part = record["parts"][0]
        assert len(part["rows"]) == {"demo_complexity": 4, "demo_sentiment": 8}[task]
        if task == "demo_complexity":
            assert part["width"] <= 12  # truncated at the task's own max_length
    assert {r["parts"][0]["task"] for r in steps} == {"demo_complexity", "demo_sentiment"}


def test_a_task_that_stops_improving_stops_training(mtl_train, tmp_path):
    run = tmp_path / "run"
    snapshots = [
        "+callbacks.snapshots._target_=pytorch_lightning.callbacks.ModelCheckpoint",
        "+callbacks.snapshots.dirpath=${paths.output_dir}/snapshots",
        "+callbacks.snapshots.every_n_train_steps=1", "+callbacks.snapshots.save_top_k=-1",
        "+callbacks.snapshots.filename='{step}'",
    ]  # fmt: skip
    result = mtl_train(
        *TINY, "trainer.max_steps=30", "trainer.val_check_interval=2",
        "task.demo_sentiment.patience=1", "task.demo_sentiment.lr_scale=0.001",
        "callbacks.early_stopping.patience=100", *snapshots, *trace(tmp_path / "t"),
        f"hydra.run.dir={run}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    stop = metrics["stopped_tasks"]["demo_sentiment"]
    assert stop < 28 and metrics["final"]["step"] == 30  # complexity trains on
    later = [r for r in read_trace(tmp_path / "t") if r["step"] > stop]
    assert later and {p["task"] for r in later for p in r["parts"]} == {"demo_complexity"}
    at_stop, final = (
        checkpoint(run / f"snapshots/step={stop}.ckpt"),
        checkpoint(run / "checkpoints/last.ckpt"),
    )
    sentiment = [k for k in final if k.startswith("heads.demo_sentiment.")]
    complexity = [k for k in final if k.startswith("heads.demo_complexity.")]
    assert all(torch.equal(at_stop[k], final[k]) for k in sentiment)  # frozen since the stop
    assert not all(torch.equal(at_stop[k], final[k]) for k in complexity)
    assert "task demo_sentiment stopped at step" in (run / "train.log").read_text()


def test_task_patience_counts_only_validations_after_the_probe():
    stops = []
    sampler = SimpleNamespace(stop=lambda name, step: stops.append((name, step)))
    stopping = TaskStopping(sampler, {"a": 1}, ["a"], delay=0, start_step=3)
    module = SimpleNamespace(frozen_heads=set())
    for step, score in enumerate([0.5, 0.4, 0.3, 0.2, 0.1], start=1):  # never better
        trainer = SimpleNamespace(global_step=step, sanity_checking=False, loggers=[],
                                  state=SimpleNamespace(fn="fit"), should_stop=False,
                                  callback_metrics={"val/a/score": torch.tensor(score)})  # fmt: skip
        stopping.on_validation_end(trainer, module)
    assert stops == [("a", 5)] and module.frozen_heads == {"a"} and trainer.should_stop


def test_accumulation_equals_one_step_on_the_summed_loss(tiny_model, batches):
    """Two task batches accumulated into one optimizer step move the weights exactly as one
    joint step on both (the balanced losses summed), to fp32 tolerance."""
    single = tiny_model(StaticBalancer, max_grad_norm=None)
    accumulated = copy.deepcopy(single)
    accumulated.optimizer_cfg.accumulate = 2
    apart = batches(joint=False)  # two batches, one per task
    joint = [{"step": 0, "parts": [p for b in apart for p in b["parts"]]}]
    for model, data, steps in ((single, joint, 1), (accumulated, apart, 1)):
        trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)  # fmt: skip
        trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=None))
        assert trainer.global_step == 1
    a, b = single.state_dict(), accumulated.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    start = tiny_model(StaticBalancer).state_dict()
    assert not all(torch.equal(start[k], b[k]) for k in b if k.startswith("encoder."))


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
def test_accumulation_resumes_exactly_at_window_boundaries(mtl_train, tmp_path):
    """Checkpoints fall between optimizer steps only; a run killed after step 3 and resumed
    from its last.ckpt ends with the uninterrupted run's weights, bit for bit."""
    args = [*TINY, "optimizer.accumulate=3", "trainer.max_steps=6", "trainer.val_check_interval=6",
            "callbacks.checkpoints.every_n_steps=1"]  # fmt: skip
    full = mtl_train(*args, *trace(tmp_path / "t0"), f"hydra.run.dir={tmp_path}/full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    assert len(read_trace(tmp_path / "t0")) == 18  # 3 batches per optimizer step
    kill = ["+callbacks.kill._target_=probes.SignalAt", "+callbacks.kill.step=4"]
    run = tmp_path / "run"
    killed = mtl_train(*args, *kill, f"hydra.run.dir={run}", cwd=tmp_path, subprocess=True)
    assert killed.returncode == -9
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 3
    resumed = mtl_train(f"resume={run}", "~callbacks.kill", *trace(tmp_path / "t1"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in read_trace(tmp_path / "t1")] == list(range(9, 18))
    a, b = (
        checkpoint(tmp_path / "full/checkpoints/last.ckpt"),
        checkpoint(run / "checkpoints/last.ckpt"),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_accumulation_needs_validations_between_optimizer_steps(mtl_train, tmp_path):
    result = mtl_train(*TINY, "optimizer.accumulate=3", "trainer.val_check_interval=4",
                       f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert (
        "error: trainer.val_check_interval: counts batches, and must be a multiple of optimizer.accumulate=3"
        in result.stderr
    )


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
@pytest.mark.skipif(sys.platform != "linux", reason="DDP on CPU is exercised on Linux (gloo)")
def test_pcgrad_on_two_processes_equals_one_process_with_the_doubled_batch(mtl_train, tmp_path):
    same = [
        "encoder=tiny", "balancer=pcgrad", "trainer.max_steps=4", "trainer.val_check_interval=4",
        "trainer.precision=32-true", "encoder.dropout=0", "task.demo_complexity.head.dropout=0",
        "task.demo_sentiment.head.dropout=0",
    ]  # fmt: skip
    two = mtl_train(*same, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                    "data.batch_size=4", f"hydra.run.dir={tmp_path}/ddp", cwd=tmp_path,
                    subprocess=True)  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    probe = ["+callbacks.initial._target_=probes.InitialWeights",
             f"+callbacks.initial.path={tmp_path}/start.safetensors"]  # fmt: skip
    one = mtl_train(
        *same, *probe, "data.batch_size=8", f"hydra.run.dir={tmp_path}/one", cwd=tmp_path
    )
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (
        checkpoint(tmp_path / "ddp/checkpoints/last.ckpt"),
        checkpoint(tmp_path / "one/checkpoints/last.ckpt"),
    )
    start = load_file(tmp_path / "start.safetensors")
    assert not torch.allclose(
        start["encoder.layers.0.ffn_in.weight"], b["encoder.layers.0.ffn_in.weight"]
    )
    for key in a:
        if key.startswith(("encoder.", "heads.")):
            assert torch.allclose(a[key], b[key], atol=2e-5), key


# ---- several label columns, some of them empty ---------------------------------------------


@pytest.fixture(scope="module")
def two_targets(tmp_path_factory) -> dict[str, Path]:
    """The demo complexity rows with a second target (readability, from the first plus noise);
    every 4th row lacks readability and every 7th lacks complexity."""
    rng = np.random.default_rng(0)
    files = {}
    folder = tmp_path_factory.mktemp("two_targets")
    for split in ("train", "val"):
        with (DEMO / f"complexity/{split}.csv").open(encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))[1:]
        out = [["sentence", "complexity", "readability"]]
        for i, (sentence, score) in enumerate(rows):
            readability = f"{8 - float(score) + rng.normal(0, 0.3):.3f}"
            out.append([sentence, "" if i % 7 == 3 else score, "" if i % 4 == 1 else readability])
        files[split] = folder / f"{split}.csv"
        with files[split].open("w", encoding="utf-8", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(out)
    return files


def inline_task(name: str, files: dict[str, Path], labels: str) -> str:
    return (f"+task.{name}={{type: regression, files: {{train: {files['train']}, val: {files['val']}}}, "
            f"text_column: sentence, {labels}}}")  # fmt: skip


def test_two_label_columns_with_missing_cells_train_and_predict(
    mtl_train, run_module, two_targets, tmp_path
):
    task = inline_task("two", two_targets, "label_columns: [complexity, readability]")
    run = tmp_path / "run"
    result = mtl_train(*TINY, "trainer.max_steps=6", "trainer.val_check_interval=3", "task=[]", task,
                       f"hydra.run.dir={run}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/two/rmse", "val/two/readability/rmse", "val/two/score"} <= set(metrics["final"])
    assert metrics["final"]["val/two/score"] == metrics["final"]["val/two/r2"]  # the first column's
    missing = metrics["data"]["two"]
    assert missing["train"]["missing_labels"] == {"complexity": 286, "readability": 500}
    assert missing["val"]["missing_labels"] == {"complexity": 43, "readability": 75}
    out = tmp_path / "predictions.csv"
    predicted = run_module("mtl.predict", str(run), "--input", str(two_targets["val"]),
                           "--output", str(out), cwd=tmp_path)  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300 and {"two", "two_readability"} <= set(rows[0])


def test_missing_labels_count_as_if_their_rows_were_dropped(mtl_train, two_targets, tmp_path):
    """One label column with empty cells: the step-0 validation (the same initial model)
    scores exactly as on the file without those rows, and the loss is the loss without them."""
    dropped = {}
    for split, path in two_targets.items():
        with path.open() as f:
            rows = [r for r in csv.reader(f)]
        dropped[split] = tmp_path / f"{split}.csv"
        kept = [rows[0]] + [r for r in rows[1:] if r[1]]
        with dropped[split].open("w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(kept)
    results = {}
    for name, files, labels in (("t", two_targets, "label_columns: [complexity]"),
                                ("t", dropped, "label_column: complexity")):  # fmt: skip
        run = tmp_path / f"run{len(results)}"
        result = mtl_train(*TINY, "trainer.max_steps=1", "trainer.precision=32-true", "task=[]",
                           inline_task(name, files, labels), f"hydra.run.dir={run}", cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        results[labels] = json.loads((run / "metrics.json").read_text())["start"]
    masked, by_hand = results.values()
    for key in ("val/t/rmse", "val/t/mae", "val/t/pearson", "val/t/r2"):
        assert masked[key] == pytest.approx(by_hand[key], rel=1e-5, abs=1e-5), key  # fp32


def test_masked_loss_is_the_loss_over_the_observed_labels():
    spec = TaskSpec(type="regression", file="x", label_columns=["a", "b"])
    task = RegressionTask.fit("t", spec, [(1.0, 2.0), (3.0, None), (None, 6.0), (5.0, 4.0)])
    assert task.mean == (3.0, 4.0) and task.num_outputs == 2
    targets = torch.tensor([task.encode(r) for r in [(1.0, 2.0), (3.0, None), (None, 6.0)]])
    output = torch.tensor([[0.5, -1.0], [0.0, 9.0], [9.0, 1.0]])
    seen = torch.tensor([[True, True], [True, False], [False, True]])
    standardized = (targets - torch.tensor(task.mean)) / torch.tensor(task.std)
    expected = ((output - standardized)[seen] ** 2).mean()
    assert torch.allclose(task.loss(output, targets), expected)
    spec = TaskSpec(type="classification", file="x", label_columns=["a", "b"])
    task = ClassificationTask.fit("c", spec, [("x", "y"), ("y", None)])
    logits = torch.randn(2, 4)
    targets = torch.tensor([task.encode(("x", "y")), task.encode(("y", None))])
    expected = torch.nn.functional.cross_entropy(logits.view(2, 2, 2)[seen[:2]], targets[seen[:2]])
    assert torch.allclose(task.loss(logits, targets), expected)
