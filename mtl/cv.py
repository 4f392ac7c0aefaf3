"""Cross-validation for small data: `python -m mtl.train cv.folds=K cv.task=NAME ...`.

The task's rows are cut into K folds by group (`cv.group_column`, default the task's own split
group): the groups, in natural order, permuted by `numpy.random.default_rng(cv.seed)` and cut
with `array_split`. Fold k is one ordinary training run in `<run>/fold<k>/`: fold k is its
test split, an inner validation split of the other folds (`cv.val_fraction` of their groups)
chooses its best checkpoint, and the other tasks train in full. No choice is made on a
held-out fold: its predictions come from the checkpoint chosen on the inner split.

The run directory then holds `cv.json` (each fold's test metrics, their mean and sd, and the
metrics of the pooled out-of-fold predictions, with the cubic-mapped RMSE fitted on all of
them), `oof.csv` (every row's fold, label and prediction) and `ensemble.json`, so the K models
predict together: `python -m mtl.predict <run> --input ...`.

`python -m mtl.train resume=<run>` continues a stopped cross-validation: finished folds are
kept as they are, a fold that stopped midway resumes from its last.ckpt, the rest train.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from mtl import trained
from mtl.errors import ConfigError, require
from mtl.evaluate import predictions, split_datasets
from mtl.io import atomic_write_text, read_json_object
from mtl.resume import check_resumed_data
from mtl.tasks import all_kinds, kind_named
from mtl.trained import ENSEMBLE_FILE


@dataclass
class CVConfig:
    folds: int = 0  # K >= 2: cross-validate; 0: one ordinary run
    task: str | None = None  # the task whose rows are folded (default: the only task)
    group_column: str | None = None  # rows of a group share a fold (default: the task's split)
    seed: int = 0  # the permutation of the groups
    val_fraction: float = 0.2  # the inner validation split, of the training folds' groups

    def check(self) -> None:
        """The ranges of these settings; errors name the `cv.` key."""
        folds, fraction = self.folds, self.val_fraction
        require("cv.folds", folds, folds == 0 or folds >= 2, "0 (no cross-validation) or >= 2")
        require("cv.val_fraction", fraction, 0 < fraction < 1, "in (0, 1)")


def cross_validate(cfg: DictConfig, train) -> dict:
    """Run the K folds with `train` (mtl.train.train) and pool their held-out predictions."""
    cv = CVConfig(**OmegaConf.to_container(cfg.cv, resolve=True))
    name = cv.task or (next(iter(cfg.task)) if len(cfg.task) == 1 else None)
    if name not in cfg.task:
        raise ConfigError(
            f"cv.task: {cv.task!r} is not one of the run's tasks ({', '.join(cfg.task)}); name "
            "the task whose rows are folded"
        )
    kind = kind_named(str(cfg.task[name].get("type")), f"task.{name}.type")
    if not kind.cross_validates:
        pooled_kinds = [k for k, cls in all_kinds().items() if cls.cross_validates]
        raise ConfigError(
            f"cv.task: {name} is a {kind.kind} task; cross-validation pools one prediction per "
            f"row of a task of a kind that allows it ({', '.join(pooled_kinds)})"
        )
    if not cfg.task[name].get("file"):
        raise ConfigError(
            f"cv.task: cross-validation folds the rows of one file; give task.{name}.file (and "
            "its split.group_column) instead of files"
        )
    out = Path(cfg.paths.output_dir)
    folds, pooled = [], []
    resumed, allow = bool(cfg.get("resume")), cfg.resume_allow_changed_data
    for k in range(cv.folds):
        fold_dir = out / f"fold{k}"
        summary = (resumed and _finished(fold_dir, allow)) or train(
            _fold_config(cfg, cv, name, k, fold_dir, resumed)
        )
        best = trained.load(summary["best_checkpoint"])
        test = split_datasets(best, "test", allow)[name]
        predicted, labels = predictions(best, {name: test})[name]
        prefix = f"test/{name}/"
        folds.append({key: v for key, v in summary["test"].items() if key.startswith(prefix)})
        pooled.append((k, predicted, labels))
    task = best.tasks[name]
    result = _summarize(task, name, cv, folds, pooled)
    atomic_write_text(out / "cv.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out / "oof.csv", _oof_csv(task, pooled))
    members = {"members": [f"fold{k}" for k in range(cv.folds)]}
    atomic_write_text(out / ENSEMBLE_FILE, json.dumps(members, indent=2) + "\n")
    print(format_cv(result))
    return result


def _finished(fold_dir: Path, allow_changed_data: bool) -> dict | None:
    """A fold that a resumed cross-validation need not train again: its metrics.json, once its
    data files are checked to be as it recorded them (mtl/data/fingerprint.py)."""
    metrics = fold_dir / "metrics.json"
    summary = read_json_object(metrics) if metrics.is_file() else {}
    done = summary.get("status") == "finished" and summary.get("best_checkpoint")
    if not (done and Path(summary["best_checkpoint"]).is_file()):
        return None
    check_resumed_data(summary.get("data") or {}, allow_changed_data)
    return summary


def _fold_config(
    cfg: DictConfig, cv: CVConfig, name: str, k: int, output: Path, resumed: bool
) -> DictConfig:
    fold = copy.deepcopy(cfg)
    with open_dict(fold):
        fold.cv.folds = 0
        fold.paths.output_dir = str(output)
        started = resumed and (output / "checkpoints" / "last.ckpt").is_file()
        fold.resume = str(output) if started else None  # else the fold starts afresh
        split = fold.task[name].split
        split.folds, split.fold, split.seed = cv.folds, k, cv.seed
        split.val_fraction, split.test_fraction = cv.val_fraction, 0.0
        split.group_column = cv.group_column or split.get("group_column")
    return fold


def _summarize(task, name: str, cv: CVConfig, folds: list[dict], pooled: list) -> dict:
    """Per metric the folds' mean and sd, and the metrics of all held-out predictions at once."""
    metrics = task.metrics()
    predicted = torch.cat([p for _, p, _ in pooled])
    labels = torch.cat([y for _, _, y in pooled])
    metrics.update(predicted, labels)
    pooled_values = {key: float(v) for key, v in metrics.compute().items()}
    pooled_values["score"] = task.score(pooled_values)
    keys = list(folds[0])
    return {
        "task": name,
        "folds": cv.folds,
        "group_column": cv.group_column,
        "seed": cv.seed,
        "rows": len(labels),
        "per_fold": folds,
        "mean": {key: statistics.fmean(f[key] for f in folds) for key in keys},
        "std": {key: statistics.stdev(f[key] for f in folds) for key in keys},
        "pooled": {f"test/{name}/{key}": value for key, value in pooled_values.items()},
        "pooled_score": pooled_values["score"],
    }


def _oof_csv(task, pooled: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fold", "row", "label", "prediction"])
    for k, predicted, labels in pooled:
        if task.multi:  # the task's own (first) label column
            predicted, labels = predicted[:, 0], labels[:, 0]
        for row, (p, y) in enumerate(zip(predicted.tolist(), labels.tolist(), strict=True)):
            writer.writerow([k, row, task.label_text(y), task.label_text(p)])
    return buffer.getvalue()


def format_cv(result: dict) -> str:
    """Mean ± sd over the folds and the pooled out-of-fold value of each metric."""
    name, prefix = result["task"], f"test/{result['task']}/"
    rows = [
        f"cross-validation of {name}: {result['folds']} folds, {result['rows']} held-out rows "
        "(pooled: every row predicted by the model that did not train on it)",
        f"{'metric':<16}{'fold mean':>12}{'± sd':>9}{'pooled':>10}",
    ]
    for key, mean in result["mean"].items():
        pooled = result["pooled"].get(key, math.nan)
        label = key[len(prefix) :].replace("rmse_mapped", "rmse mapped")
        rows.append(f"{label:<16}{mean:>12.4f}{result['std'][key]:>9.4f}{pooled:>10.4f}")
    return "\n".join(rows)


def pooled_value(result: dict, monitor: str) -> float:
    """A cross-validation's value of the run's monitored metric: val/score -> the pooled
    score, val/<task>/<metric> -> the pooled out-of-fold test/<task>/<metric>."""
    if monitor == "val/score":
        return result["pooled_score"]
    key = "test/" + monitor.removeprefix("val/")
    if key not in result["pooled"]:
        raise ConfigError(
            f"callbacks.checkpoints.monitor: {monitor} has no pooled cross-validation value "
            f"(pooled: {', '.join(result['pooled'])}); monitor val/score or one of these"
        )
    return result["pooled"][key]
