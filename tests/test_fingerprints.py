"""Data fingerprints (mtl/data/fingerprint.py): a run records its files' size and sha256, and
evaluate --split and resume= refuse a file that changed since, unless told to go ahead."""

import json
import logging
import re
import shutil

import torch
from test_hostile_inputs import DEMO, TINY

from mtl.data.datasets import with_dataset
from mtl.tasks import TaskSpec

CHANGED = r"val\.csv \(task inline, split val\) changed since the run was trained"


def train_on_a_copy(tmp_path, mtl_train):
    for split in ("train", "val"):
        shutil.copy(DEMO / f"complexity/{split}.csv", tmp_path / f"{split}.csv")
    task = (
        f"+task.inline={{type: regression, files: {{train: {tmp_path}/train.csv, val: "
        f"{tmp_path}/val.csv}}, text_column: sentence, label_column: complexity, range: [1, 7]}}"
    )
    run = tmp_path / "run"
    result = mtl_train(*TINY, "task=[]", task, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return tmp_path / "val.csv", run  # changing it leaves the fitted task as it was


def one_error(result) -> str:
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    return line


def test_changed_data_is_refused_by_evaluate_and_resume_unless_allowed(
    tmp_path, mtl_train, run_module
):
    data, run = train_on_a_copy(tmp_path, mtl_train)
    recorded = json.loads((run / "metrics.json").read_text())["data"]["inline"]["val"]
    assert recorded["sha256"] and recorded["bytes"] == data.stat().st_size
    assert run_module("mtl.evaluate", str(run), "--split", "val", cwd=tmp_path).returncode == 0

    data.write_text(data.read_text() + "an appended row,3\n")
    line = one_error(run_module("mtl.evaluate", str(run), "--split", "val", cwd=tmp_path))
    assert re.search(CHANGED, line) and "--allow-changed-data" in line, line
    allowed = run_module(
        "mtl.evaluate", str(run), "--split", "val", "--allow-changed-data", cwd=tmp_path
    )
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert re.search(CHANGED + r".*evaluated anyway", allowed.stdout), allowed.stdout

    line = one_error(mtl_train(f"resume={run}", "trainer.max_steps=6", cwd=tmp_path))
    assert line.startswith(f"error: resume={run}: ") and re.search(CHANGED, line), line
    assert "resume_allow_changed_data=true" in line
    resumed = mtl_train(
        f"resume={run}", "trainer.max_steps=6", "resume_allow_changed_data=true", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_a_checkpoint_without_fingerprints_still_evaluates(tmp_path, mtl_train, run_module):
    data, run = train_on_a_copy(tmp_path, mtl_train)
    for path in (run / "checkpoints").glob("*.ckpt"):  # best.ckpt may be a link to last.ckpt
        checkpoint = torch.load(path, weights_only=False)
        for splits in checkpoint["mtl_model"]["data"].values():
            for summary in splits.values():
                summary.pop("sha256", None), summary.pop("bytes", None)
        torch.save(checkpoint, path)
    data.write_text(data.read_text() + "an appended row,3\n")
    result = run_module("mtl.evaluate", str(run), "--split", "val", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_registered_file_that_differs_from_the_registry_warns(tmp_path, caplog):
    folder = tmp_path / "germeval2022_text_complexity"
    folder.mkdir()
    (folder / "training_set.csv").write_text("ID,Sentence,MOS\n1,a local edit,3.0\n")
    spec = TaskSpec(type="regression", dataset="germeval2022_text_complexity")
    with caplog.at_level(logging.WARNING, logger="mtl.data"):
        assert with_dataset("complexity", spec, tmp_path).file == str(folder / "training_set.csv")
    assert f"{folder / 'training_set.csv'} differs from data set" in caplog.text
