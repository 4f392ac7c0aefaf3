"""Task kinds as plug-ins: a kind defined outside mtl, in one file (tests/toy_kind.py), trains,
predicts, evaluates, exports and cross-validates through mtl's commands once an installed
package names it; checkpoints name kinds but never make mtl import code; checkpoints written
when every spec held every kind's keys still load."""

import csv
import json
import logging
from pathlib import Path

import pytest

from mtl.errors import ConfigError
from mtl.tasks import ClassificationSpec, RegressionSpec, kind_named, stored_tasks

LEVELS = ["low", "mid", "high"]
TINY = ["encoder=tiny", "trainer.max_steps=4", "trainer.val_check_interval=2"]


def on_path(site: Path, monkeypatch) -> None:
    """`site` importable by commands run in this process and in subprocesses."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))


def install(site: Path, monkeypatch, entry_points: str) -> None:
    """What installing a package with these entry points does: its metadata on the path."""
    info = site / "mtl_toy_kind-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtl-toy-kind\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    on_path(site, monkeypatch)


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """tests/toy_kind.py installed as the kind `ordinal`; a task file `size` of that kind (in
    <folder>/conf) and its data (one file, rows in groups of 3)."""
    folder = tmp_path_factory.mktemp("plugin")
    rows = [(f"Satz {i} mit {'vielen ' * (i % 3)}Wörtern.", LEVELS[i % 3]) for i in range(60)]
    with open(folder / "sizes.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "size", "group"), *((t, s, i // 3)
                                 for i, (t, s) in enumerate(rows))])  # fmt: skip
    (folder / "conf" / "task").mkdir(parents=True)
    (folder / "conf" / "task" / "size.yaml").write_text(
        "defaults:\n  - /schema/task/ordinal@size\n  - _self_\n\n"
        f"size:\n  type: ordinal\n  file: {folder}/sizes.csv\n  label_column: size\n"
        "  split: {val_fraction: 0.25, group_column: group}\n  levels: [low, mid, high]\n"
    )
    with pytest.MonkeyPatch.context() as monkeypatch:
        install(folder / "site", monkeypatch, "[mtl.task_kinds]\nordinal = toy_kind\n")
        yield folder


@pytest.fixture(scope="module")
def run(plugin, mtl_train) -> Path:
    result = mtl_train(f"hydra.searchpath=[file://{plugin}/conf]", "task=[size]", *TINY,
                       f"hydra.run.dir={plugin}/run", cwd=plugin)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return plugin / "run"


def test_a_plugin_kind_trains_with_its_own_metrics(run):
    best = json.loads((run / "metrics.json").read_text())["best"]
    assert {"val/size/accuracy", "val/size/mae", "val/size/score"} <= set(best)
    assert best["val/size/score"] == best["val/size/accuracy"]  # the kind's score


def test_a_plugin_kind_predicts_evaluates_and_exports(run, plugin, run_module, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("Ein Satz.\nEin Satz mit vielen vielen Wörtern.\n", encoding="utf-8")
    predicted = run_module("mtl.predict", str(run), "--input", str(texts), cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [list(r) for r in rows] == [["text", "size", "size_position"]] * 2
    for row in rows:  # the kind's columns: the nearest level to the predicted position
        assert row["size"] == LEVELS[min(2, max(0, round(row["size_position"])))]

    evaluated = run_module("mtl.evaluate", str(run), "--split", "val", "--output",
                           str(tmp_path / "eval.json"), cwd=tmp_path)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    recorded = json.loads((run / "metrics.json").read_text())["best"]
    values = json.loads((tmp_path / "eval.json").read_text())
    for key in ("val/size/accuracy", "val/size/mae"):
        assert values[key] == pytest.approx(recorded[key], abs=1e-4), key

    model = tmp_path / "model"
    exported = run_module("mtl.export", str(run), str(model), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    card = (model / "README.md").read_text()
    assert "| size | ordinal | one of the ordered levels low < mid < high | `text` |" in card
    again = run_module("mtl.predict", str(model), "--input", str(texts), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [json.loads(line) for line in again.stdout.splitlines()] == rows


def test_a_plugin_kind_cross_validates_with_its_own_labels(plugin, mtl_train, tmp_path):
    result = mtl_train(f"hydra.searchpath=[file://{plugin}/conf]", "task=[size]", *TINY,
                       "cv.folds=2", f"hydra.run.dir={tmp_path}/cv", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "cv" / "oof.csv", encoding="utf-8") as f:
        oof = list(csv.DictReader(f))
    assert len(oof) == 60 and {r["label"] for r in oof} == set(LEVELS)
    assert {r["prediction"] for r in oof} <= set(LEVELS)  # written by the kind's label_text


def test_a_plugin_kind_has_its_own_keys(plugin, mtl_train, tmp_path):
    task = [f"hydra.searchpath=[file://{plugin}/conf]", "task=[size]", *TINY]
    bad = mtl_train(*task, "task.size.levels=[low]", cwd=tmp_path)
    assert bad.returncode != 0
    assert "task.size.levels: must be 2 or more distinct labels, got ['low']" in bad.stderr
    for override in ("task.size.range=[1,7]", "+task.size.range=[1,7]"):
        foreign = mtl_train(*task, override, cwd=tmp_path)  # a regression key
        assert foreign.returncode != 0 and "task.size.range" in foreign.stderr, foreign.stderr
    assert "task.size.range: unknown key of ordinal tasks" in foreign.stderr


def test_a_checkpoint_never_makes_mtl_import_the_kind_it_names(
    run, run_module, tmp_path, monkeypatch
):
    """A checkpoint's kind is looked up among the installed plug-ins: a module of that name on
    the path is not imported, and the error says how a kind is registered."""
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "imported"
    (site / "evil_kind.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    on_path(site, monkeypatch)
    model = tmp_path / "model"
    assert run_module("mtl.export", str(run), str(model), cwd=tmp_path).returncode == 0
    description = json.loads((model / "mtl.json").read_text())
    for part in ("spec", "state"):
        description["tasks"]["size"][part]["type"] = "evil_kind"
    (model / "mtl.json").write_text(json.dumps(description))
    result = run_module("mtl.predict", str(model), "--input", "-", input="Ein Satz.\n",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0 and not marker.exists()
    assert "unknown task kind 'evil_kind'" in result.stderr
    assert "'mtl.task_kinds' entry points" in result.stderr


def test_an_entry_point_that_registers_another_name_is_an_error(tmp_path, monkeypatch):
    install(tmp_path / "site", monkeypatch, "[mtl.task_kinds]\nrank = toy_kind\n")
    with pytest.raises(ConfigError, match=r"task kind 'rank': its plug-in module 'toy_kind' "
                       r"registers no kind of that name"):  # fmt: skip
        kind_named("rank")


# ---- checkpoints written when every spec held every kind's keys -----------------------------

UNION = {  # the keys every stored spec held, at their defaults
    "label_column": "label", "label_columns": None, "labels": None, "label_delimiter": ";",
    "threshold": 0.5, "range": None, "loss": None, "mapped_rmse": False,
    "mask_probability": 0.15,
}  # fmt: skip


def stored(spec: dict, state: dict) -> dict:
    return {"t": {"spec": {"file": "x.csv", **UNION, **spec}, "state": state}}


def test_old_specs_load_as_their_kinds_spec(caplog):
    regression = stored({"type": "regression", "range": [1, 7]}, {"type": "regression",
                        "mean": 4.0, "std": 1.5})["t"]  # fmt: skip
    task = stored_tasks({"t": regression})["t"]
    assert isinstance(task.spec, RegressionSpec) and task.spec.range == [1, 7]
    assert task.spec.loss == "mse"  # null meant the kind's default
    assert not hasattr(task.spec, "threshold") and not hasattr(task.spec, "labels")

    # a key the kind never read: set in the old spec, it changed nothing, so it is dropped
    with caplog.at_level(logging.WARNING):
        classes = {"type": "classification", "labels": ["neg", "pos"]}
        state = {"type": "classification", "labels": ["neg", "pos"]}
        task = stored_tasks(stored({**classes, "range": [1, 7]}, state))["t"]
    assert isinstance(task.spec, ClassificationSpec) and task.labels == ("neg", "pos")
    assert "the checkpoint sets range=[1, 7], which a classification task does not use" in (
        caplog.text
    )


def test_a_stored_key_of_no_kind_is_refused():
    odd = stored({"type": "regression", "colour": "red"}, {"type": "regression", "mean": 0,
                 "std": 1})  # fmt: skip
    with pytest.raises(ConfigError, match=r"task\.t\.colour: unknown key of regression tasks"):
        stored_tasks(odd)
