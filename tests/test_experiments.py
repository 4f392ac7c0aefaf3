"""The experiments that answer the lecture's questions, run as written with tiny budgets on a
data root that holds the demo tasks in the real data sets' layout and formats (TextComplexityDE
as cp1252 CSV with articles; SST-2 as TSV with 0/1 labels), then the reports they end with."""

import csv
import io
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from mtl.predict import Predictor

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
TINY = ["encoder=tiny", "trainer.val_check_interval=2"]


def demo_rows(path: Path, n: int) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))[1 : n + 1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "TextComplexityDE19").mkdir()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["ID", "Article_ID", "Sentence", "MOS_Complexity"])
    for i, (sentence, score) in enumerate(demo_rows(DEMO / "complexity/train.csv", 300)):
        writer.writerow([i, i % 15, sentence, score])  # 15 "articles"
    (root / "TextComplexityDE19/ratings.csv").write_bytes(buffer.getvalue().encode("cp1252"))
    (root / "sst2").mkdir()
    for split, file in (("train", "train.tsv"), ("val", "dev.tsv")):
        rows = demo_rows(DEMO / f"sentiment/{split}.csv", 200)
        lines = [f"{s} \t{int(label == 'positive')}\n" for s, label in rows]
        (root / "sst2" / file).write_text("sentence\tlabel\n" + "".join(lines), encoding="utf-8")
    return root


def experiment(mtl_train, data_root: Path, tmp_path: Path, *args: str) -> Path:
    sweep = tmp_path / "sweep"
    result = mtl_train(*args, *TINY, f"hydra.sweep.dir={sweep}", f"hydra.run.dir={sweep}",
                       cwd=tmp_path, env={"MTL_DATA_ROOT": str(data_root)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep / "stdout.txt").write_text(result.stdout)
    return sweep


def runs(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/metrics.json"))]


def assert_report(sweep: Path, *pngs: str) -> str:
    report = (sweep / "report" / "report.md").read_text()
    for name in ("validation_curves.png", "final_scores.png", *pngs):
        with Image.open(sweep / "report" / name) as image:
            assert image.size[0] > 300 and len(set(image.convert("L").getdata())) > 10
    return report


def test_transfer_gain(mtl_train, data_root, tmp_path):
    sweep = experiment(mtl_train, data_root, tmp_path, "experiment=transfer_gain",
                       "trainer.max_steps=${mtl_per_task:4}", "seed=0,1")  # fmt: skip
    results = runs(sweep)
    assert len(results) == 6  # 3 task sets x 2 seeds
    steps = sorted(r["final"]["step"] for r in results)
    assert steps == [4, 4, 4, 4, 8, 8]  # two tasks: twice the steps, the same per task
    report = assert_report(sweep)
    assert "## Multi-task gain" in report
    gain_rows = [line for line in report.splitlines() if line.startswith("| complexity_de |")]
    assert gain_rows and "complexity_de, sst2 | (all runs) | 2 |" in gain_rows[0]


def test_pretraining_gain(mtl_train, data_root, tmp_path):
    sweep = experiment(mtl_train, data_root, tmp_path, "experiment=pretraining_gain",
                       "trainer.max_steps=4", "seed=0")  # fmt: skip
    assert len(runs(sweep)) == 2
    report = assert_report(sweep)
    assert "| finetune | finished |" in report and "| from_scratch | finished |" in report


def test_data_efficiency_draws_learning_curves(mtl_train, data_root, tmp_path):
    sweep = experiment(
        mtl_train, data_root, tmp_path, "experiment=data_efficiency",
        "trainer.max_steps=${mtl_per_task:2}", "task.complexity_de.train_fraction=0.5,1.0",
        "transfer=finetune", "seed=0",
    )  # fmt: skip
    results = runs(sweep)
    assert len(results) == 4  # 2 fractions x 2 task sets
    rows = sorted({r["data"]["complexity_de"]["train"]["rows"] for r in results})
    assert len(rows) == 2 and rows[0] < rows[1]
    report = assert_report(sweep, "learning_curve.png")
    gains = [line for line in report.splitlines() if line.startswith("| complexity_de | comp")]
    assert len(gains) == 2  # the gain at each fraction, not one mean over both
    assert "train_fraction=0.5 |" in gains[0] and "train_fraction=1.0 |" in gains[1]


@pytest.mark.slow  # in CI's slow run: each mode has a faster test in test_transfer.py
def test_transfer_modes(mtl_train, data_root, tmp_path):
    modes = "finetune,partial,feature_extraction,probe_then_finetune,gradual_unfreezing,layer_decay"
    sweep = experiment(mtl_train, data_root, tmp_path, "experiment=transfer_modes",
                       "trainer.max_steps=4", f"transfer={modes}", "seed=0")  # fmt: skip
    results = runs(sweep)
    assert len(results) == 6 and all(r["status"] == "finished" for r in results)
    report = assert_report(sweep)
    for mode in modes.split(","):
        assert f"| {mode} | finished |" in report
    assert "train s" in report


@pytest.fixture(scope="module")
def cv_run(mtl_train, data_root, tmp_path_factory) -> Path:
    """A 5-fold cross-validation of 4 steps per fold, read by the tests below (copied by the
    test that changes it)."""
    tmp = tmp_path_factory.mktemp("cv")
    return experiment(mtl_train, data_root, tmp, "experiment=complexity_cv", "trainer.max_steps=4")


def test_complexity_cv_pools_out_of_fold_predictions(cv_run):
    run = cv_run
    table = (run / "stdout.txt").read_text().split("cross-validation of complexity_de")[1]
    assert "pooled" in table and "rmse mapped" in table and "fold mean" in table
    cv = json.loads((run / "cv.json").read_text())
    assert cv["folds"] == 5 and cv["rows"] == 300 and cv["group_column"] == "Article_ID"
    with (run / "oof.csv").open() as f:
        oof = list(csv.DictReader(f))
    assert len(oof) == 300 and {row["fold"] for row in oof} == {"0", "1", "2", "3", "4"}
    errors = [(float(r["prediction"]) - float(r["label"])) ** 2 for r in oof]
    pooled = cv["pooled"]["test/complexity_de/rmse"]
    assert pooled == pytest.approx(math.sqrt(sum(errors) / len(errors)), abs=1e-4)
    assert cv["pooled"]["test/complexity_de/rmse_mapped"] <= pooled + 1e-6  # a fit can only help
    for fold in range(5):  # no article in two folds' test splits
        metrics = json.loads((run / f"fold{fold}/metrics.json").read_text())
        assert metrics["data"]["complexity_de"]["test"]["rows"] == sum(
            1 for r in oof if r["fold"] == str(fold)
        )
    predictor = Predictor.load(run)  # the 5 fold models, an ensemble
    assert len(predictor.members) == 5
    texts = ["Ein kurzer Satz.", "Die Verwaltungsgerichtsbarkeit prüft Verwaltungsakte."]
    each = [Predictor([m]).predict(texts) for m in predictor.members]
    for i, row in enumerate(predictor.predict(texts)):  # the ensemble averages its members
        mean = sum(p[i]["complexity_de"] for p in each) / len(each)
        assert row["complexity_de"] == pytest.approx(mean, abs=1e-5)
    assert torch.isfinite(torch.tensor(cv["mean"]["test/complexity_de/rmse"]))


def test_more_folds_than_articles_is_refused_before_a_fold_trains(mtl_train, data_root, tmp_path):
    run = tmp_path / "cv"
    result = mtl_train("experiment=complexity_cv", *TINY, "cv.folds=500", f"hydra.run.dir={run}",
                       cwd=tmp_path, env={"MTL_DATA_ROOT": str(data_root)})  # fmt: skip
    assert result.returncode == 1
    assert re.search(r"error: task\.complexity_de: 500 folds \(cv\.folds\) need as many groups: "
                     r"\S+ratings\.csv has 300 rows in \d+ group\(s\) of split\.group_column "
                     r"'Article_ID'", result.stderr), result.stderr[-2000:]  # fmt: skip
    assert not (run / "fold0" / "checkpoints").exists()  # found before fold 0 trained


def test_a_sweep_over_experiments_keeps_its_jobs_in_one_directory(mtl_train, data_root, tmp_path):
    # each experiment sets its own `name`, which the default sweep directory is named after
    result = mtl_train("-m", "experiment=demo,complexity_cv", *TINY, "trainer.max_steps=2",
                       f"paths.log_dir={tmp_path}/logs", cwd=tmp_path,
                       env={"MTL_DATA_ROOT": str(data_root)})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    [sweep] = (tmp_path / "logs" / "multiruns").glob("*/*")
    assert sweep.parent.name == "demo+complexity_cv"
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 2
    assert "experiment=demo," in jobs[0] and "experiment=complexity_cv," in jobs[1]
    assert (sweep / jobs[0] / "metrics.json").exists() and (sweep / jobs[1] / "cv.json").exists()


def test_a_stopped_cross_validation_resumes_where_it_stopped(
    mtl_train, data_root, cv_run, tmp_path
):
    run = tmp_path / "sweep"
    shutil.copytree(cv_run, run)  # modification times kept
    whole = json.loads((run / "cv.json").read_text())
    # as if stopped in fold 3 after its last checkpoint: fold 4 never began, no cv.json
    (run / "cv.json").unlink()
    fold3 = json.loads((run / "fold3/metrics.json").read_text())
    (run / "fold3/metrics.json").write_text(json.dumps({**fold3, "status": "running"}))
    for path in sorted((run / "fold4").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    kept = {k: (run / f"fold{k}/checkpoints/best.ckpt").stat().st_mtime_ns for k in range(3)}

    result = mtl_train(f"resume={run}", cwd=tmp_path, env={"MTL_DATA_ROOT": str(data_root)})
    assert result.returncode == 0, result.stderr[-3000:]
    for k, mtime in kept.items():  # finished folds are not trained again
        assert (run / f"fold{k}/checkpoints/best.ckpt").stat().st_mtime_ns == mtime
    assert json.loads((run / "fold3/metrics.json").read_text())["status"] == "finished"
    resumed = json.loads((run / "cv.json").read_text())
    for key, value in whole["pooled"].items():  # the same folds, the same out-of-fold scores
        assert resumed["pooled"][key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow  # in CI's slow run: the benchmark script end to end, two interpreters
def test_complexity_best_scored_on_held_out_articles(data_root, tmp_path):
    """benchmarks/complexity_heldout.py trains experiment=complexity_best on a copy of the
    data root without 3 articles and scores the model on their sentences."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "complexity_heldout.py"
    out = tmp_path / "heldout"
    tiny = ["experiment=complexity_best", "encoder=tiny", "encoder.keep_layers=1",
            "trainer.max_steps=4", "trainer.val_check_interval=2"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(script), "--data-root", str(data_root), "--articles", "3",
         "--out", str(out), "--", *tiny],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    held = {
        a.strip() for a in result.stdout.split("held out: 3 articles (")[1].split(")")[0].split(",")
    }
    with (data_root / "TextComplexityDE19/ratings.csv").open(encoding="cp1252", newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if r["Article_ID"] not in held]
    with (out / "data/TextComplexityDE19/ratings.csv").open(encoding="cp1252", newline="") as f:
        copied = list(csv.DictReader(f))
    assert len(held) == 3 and [r["ID"] for r in copied] == [r["ID"] for r in kept]
    assert (out / "data/sst2").is_symlink()  # the other data sets are linked, not copied
    config = (out / "run/.hydra/config.yaml").read_text()
    assert "mode: feature_extraction" in config and "keep_layers: 1" in config
    test = [r for r in rows if r["Article_ID"] in held]
    predicted = Predictor.load(out / "run").predict([r["Sentence"] for r in test])
    errors = [
        (p["complexity_de"] - float(r["MOS_Complexity"])) ** 2
        for p, r in zip(predicted, test, strict=True)
    ]
    line = next(x for x in result.stdout.splitlines() if x.startswith("mtl "))
    assert float(line.split()[1]) == pytest.approx(math.sqrt(sum(errors) / len(errors)), abs=1e-3)
    assert "log(length), least squares" in result.stdout and "training took" in result.stdout


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
def test_german_mlm_reads_the_german_texts_and_starts_complexity_best(
    shared_data, mtl_train, tmp_path
):
    """The masked LM on the German sentences and tweets (no labels read), then its encoder
    starts complexity_best: issue 13's in-domain pretraining lever, as the README runs it."""
    env = {"MTL_DATA_ROOT": str(shared_data)}
    short = ["encoder=tiny", "trainer.max_steps=2", "trainer.val_check_interval=2"]
    mlm = tmp_path / "mlm"
    result = mtl_train("experiment=german_mlm", *short, f"hydra.run.dir={mlm}", cwd=tmp_path,
                       env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((mlm / "metrics.json").read_text())
    rows = {task: d["train"]["rows"] for task, d in metrics["data"].items()}
    assert rows == {"complexity_text": 876, "germeval_text": 189, "tweets": 1839}
    assert {"val/tweets/accuracy", "val/complexity_text/loss"} <= set(metrics["final"])
    best = tmp_path / "best"
    result = mtl_train("experiment=complexity_best", *short, "encoder.keep_layers=null",
                       f"encoder.init_from={mlm}", f"hydra.run.dir={best}", cwd=tmp_path,
                       env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    source = json.loads((best / "metrics.json").read_text())["encoder"]
    assert source["init_from"] == str(mlm) and source["checkpoint"].startswith(str(mlm))
