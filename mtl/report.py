"""Turn runs into numbers and plots: `python -m mtl.report DIR... [--output DIR]`.

DIR is a run, a sweep (its runs are found below it) or a cross-validation run. The report:

- prints, and writes as `runs.csv`, one row per run: its overrides (those that differ between
  the runs), seed, status, the validation score at the start, best step and end, each task's
  best score, test and cross-validation scores where there are any, and the training time;
- groups runs that differ only in their seed: per task, the mean and sd over seeds;
- where one task ran alone and with other tasks, the multi-task gain: per seed, the score
  with the others minus the score alone, as mean ± sd;
- draws PNGs: validation curves per task (one line per run), final task scores by setting
  with error bars over seeds, and, where a train fraction was swept, learning curves (score
  against the number of training rows).

metrics.json (and cv.json) are its input; nothing else is read but each run's overrides.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from matplotlib.figure import Figure
from omegaconf import DictConfig

from mtl import cli
from mtl.errors import MtlError
from mtl.io import atomic_write, atomic_write_text, read_json_object


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]  # key -> value, as given on the command line
    metrics: dict  # metrics.json (for a cross-validation: its first fold's)
    cv: dict | None = None  # cv.json
    tasks: list[str] = field(default_factory=list)
    train_seconds: float = math.nan  # a cross-validation's: all its folds'

    @property
    def name(self) -> str:
        name = self.path.name
        return name if len(name) <= 32 else name[:29] + "..."

    @property
    def seed(self) -> str:
        if "seed" in self.overrides:
            return self.overrides["seed"]
        config = self.path / ".hydra" / "config.yaml"
        return str(yaml.safe_load(config.read_text()).get("seed", 0)) if config.is_file() else "0"

    def value(self, key: str) -> str:
        """The run's override of `key` ("" if it has none; the seed always)."""
        return self.seed if key == "seed" else self.overrides.get(key, "")

    def score(self, part: str) -> float:
        """val/score at the start, best step or end."""
        return (self.metrics.get(part) or {}).get("val/score", math.nan)

    def task_score(self, task: str, part: str = "best") -> float:
        """A task's val score at the start, best step or end; a cross-validation's result
        ("final") for its folded task is the score of its pooled out-of-fold predictions."""
        if part == "final" and self.cv and self.cv["task"] == task:
            return self.cv["pooled"].get(f"test/{task}/score", math.nan)
        entry = self.metrics.get(part) or {}
        return entry.get(f"val/{task}/score", math.nan)

    def train_rows(self, task: str) -> int | None:
        return self.metrics.get("data", {}).get(task, {}).get("train", {}).get("rows")


def find_runs(roots: list[Path]) -> list[Run]:
    """Every run at or below the given directories, in path order."""
    runs = []
    for root in roots:
        if not root.is_dir():
            raise MtlError(f"{root}: no such directory")
        found = _walk(root)
        if not found:
            raise MtlError(f"{root}: no runs here (no metrics.json or cv.json at or below it)")
        runs += found
    return runs


def _walk(folder: Path) -> list[Run]:
    if (folder / "cv.json").is_file():
        cv = read_json_object(folder / "cv.json")
        folds = [read_json_object(f) for f in sorted(folder.glob("fold*/metrics.json"))]
        run = _run(folder, folds[0] if folds else {}, cv)
        if folds:
            run.train_seconds = sum(f.get("train_seconds", math.nan) for f in folds)
        return [run]
    if (folder / "metrics.json").is_file():
        metrics = read_json_object(folder / "metrics.json")
        if "status" in metrics and "history" in metrics:
            return [_run(folder, metrics)]
        print(f"skipped {folder / 'metrics.json'}: not a run's (no status and history; an "
              "evaluation's output?)", file=sys.stderr)  # fmt: skip
        return []
    return [run for child in sorted(folder.iterdir()) if child.is_dir() for run in _walk(child)]


def _run(folder: Path, metrics: dict, cv: dict | None = None) -> Run:
    overrides_file = folder / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else []
    pairs = dict(o.lstrip("+~").split("=", 1) for o in overrides or [] if "=" in o)
    for key in [k for k in pairs if k.startswith(("hydra.", "paths."))]:
        del pairs[key]  # where a run was written, not how it was trained
    history = metrics.get("history") or [{}]
    tasks = sorted({k.split("/")[1] for k in history[-1] if k.count("/") == 2})
    return Run(folder, pairs, metrics, cv, tasks, metrics.get("train_seconds", math.nan))


def swept(runs: list[Run]) -> list[str]:
    """The override keys whose values differ between runs (seed last)."""
    keys = {k for run in runs for k in run.overrides} | {"seed"}
    varying = [k for k in sorted(keys) if len({run.value(k) for run in runs}) > 1]
    return sorted(varying, key=lambda k: k == "seed")


def setting(run: Run, keys: list[str]) -> str:
    """What distinguishes a run apart from its seed, e.g. 'task=[a] encoder=scratch'."""
    parts = [f"{k}={run.overrides.get(k, '-')}" for k in keys if k != "seed"]
    return " ".join(parts) or "(all runs)"


# ---- tables -------------------------------------------------------------------------------


def run_table(runs: list[Run]) -> tuple[list[str], list[list]]:
    """Columns and rows of the one-row-per-run table."""
    keys = swept(runs)
    tasks = sorted({t for run in runs for t in run.tasks})
    columns = ["run", *keys, "status", "start score", "best score", "final score", "best step"]
    columns += [f"{t} best" for t in tasks] + ["test score", "cv pooled score", "train s"]
    rows = []
    for run in runs:
        m = {} if run.cv else run.metrics  # a cross-validation's folds: in its own tables
        status = f"{run.cv['folds']} folds" if run.cv else m.get("status", "?")
        scores = [math.nan if run.cv else run.score(p) for p in ("start", "best", "final")]
        best = [math.nan if run.cv else run.task_score(t) for t in tasks]
        test = (m.get("test") or {}).get("test/score", math.nan)
        cv = run.cv["pooled_score"] if run.cv else math.nan
        rows.append([run.name, *(run.value(k) for k in keys), status, *scores,
                     m.get("best_step"), *best, test, cv, run.train_seconds])  # fmt: skip
    return columns, rows


def seed_table(runs: list[Run]) -> tuple[list[str], list[list]]:
    """Per setting (runs differing only in seed) and task: final score mean ± sd, seeds."""
    keys = swept(runs)
    tasks = sorted({t for run in runs for t in run.tasks})
    groups = _groups(runs, keys)
    columns = ["setting", "seeds", *(f"{t} final" for t in tasks)]
    rows = []
    for name, members in groups.items():
        scores = [[r.task_score(t, "final") for r in members if t in r.tasks] for t in tasks]
        rows.append([name, len(members), *(_mean_sd(values) for values in scores)])
    return columns, rows


def gain_table(runs: list[Run]) -> tuple[list[str], list[list]]:
    """Per task that ran both alone and with other tasks: final score with others minus alone,
    paired by seed and by every other setting."""
    keys = [k for k in swept(runs) if k not in ("seed", "task")]
    alone: dict[tuple, float] = {}
    for run in runs:
        if len(run.tasks) == 1:
            task = run.tasks[0]
            alone[(task, run.seed, setting(run, keys))] = run.task_score(task, "final")
    gains: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for run in runs:
        if len(run.tasks) < 2:
            continue
        for task in run.tasks:
            key = (task, run.seed, setting(run, keys))
            if key in alone:
                gain = run.task_score(task, "final") - alone[key]
                gains[(task, ", ".join(run.tasks), setting(run, keys))].append(gain)
    columns = ["task", "trained with", "setting", "seeds", "gain (final score, with - alone)"]
    rows = [[t, w, s, len(v), _mean_sd(v)] for (t, w, s), v in sorted(gains.items())]
    return columns, rows


def cv_table(cv_runs: list[Run]) -> tuple[list[str], list[list]]:
    """Per cross-validation run: each metric's fold mean ± sd and pooled value."""
    columns = ["run", "metric", "fold mean ± sd", "pooled"]
    rows = []
    for run in cv_runs:
        prefix = f"test/{run.cv['task']}/"
        for key, mean in run.cv["mean"].items():
            spread = f"{mean:.4f} ± {run.cv['std'][key]:.4f}"
            pooled = run.cv["pooled"].get(key, math.nan)
            rows.append([run.path.name, key[len(prefix) :], spread, pooled])
    return columns, rows


def cv_seed_table(cv_runs: list[Run]) -> tuple[list[str], list[list]]:
    """Per setting of cross-validation runs (differing only in seed): each pooled out-of-fold
    metric's mean ± sd over the seeds."""
    metrics = list(dict.fromkeys(k.split("/")[-1] for r in cv_runs for k in r.cv["pooled"]))
    columns = ["setting", "seeds", *(f"pooled {m}" for m in metrics)]
    rows = []
    for name, members in _groups(cv_runs, swept(cv_runs)).items():
        pooled = [{k.split("/")[-1]: v for k, v in r.cv["pooled"].items()} for r in members]
        cells = [_mean_sd([p.get(m, math.nan) for p in pooled]) for m in metrics]
        rows.append([name, len(members), *cells])
    return columns, rows


def _groups(runs: list[Run], keys: list[str]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[setting(run, keys)].append(run)
    return dict(groups)


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def markdown(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def csv_text(columns: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[("" if c is None else c) for c in row] for row in rows])
    return buffer.getvalue()


# ---- plots --------------------------------------------------------------------------------


def plots(runs: list[Run], out: Path) -> list[Path]:
    """The report's PNGs (matplotlib's object API: no display, no global state)."""
    if not any(run.tasks for run in runs):
        return []  # no run has validated yet: nothing to draw
    written = [_curves(runs, out / "validation_curves.png")]
    written.append(_bars(runs, out / "final_scores.png"))
    fraction_keys = [k for k in swept(runs) if k.endswith(".train_fraction")]
    if fraction_keys:
        written.append(_learning_curve(runs, fraction_keys[0], out / "learning_curve.png"))
    return written


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    return path


def _curves(runs: list[Run], path: Path) -> Path:
    tasks = sorted({t for run in runs for t in run.tasks})
    keys = swept(runs)
    figure = Figure(figsize=(5.5 * len(tasks), 4))
    axes = figure.subplots(1, len(tasks), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for run in runs:
            history = [e for e in run.metrics.get("history", []) if f"val/{task}/score" in e]
            if history:
                label = setting(run, keys) + (f" seed={run.seed}" if "seed" in keys else "")
                label += " (fold 0)" if run.cv else ""  # a CV's curves: its first fold's
                ax.plot([e["step"] for e in history], [e[f"val/{task}/score"] for e in history],
                        marker="o", markersize=3, label=label)  # fmt: skip
        ax.set_title(f"{task}: validation score during training")
        ax.set_xlabel("optimizer steps")
        ax.set_ylabel("task score (R² or macro-F1)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def _bars(runs: list[Run], path: Path) -> Path:
    tasks = sorted({t for run in runs for t in run.tasks})
    groups = _groups(runs, swept(runs))
    figure = Figure(figsize=(max(6, 1.6 * len(groups) * len(tasks)), 4.5))
    ax = figure.subplots()
    width = 0.8 / len(tasks)
    for i, task in enumerate(tasks):
        means, sds = [], []
        for members in groups.values():
            values = [r.task_score(task, "final") for r in members if task in r.tasks]
            values = [v for v in values if not math.isnan(v)]
            means.append(statistics.fmean(values) if values else math.nan)
            sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        positions = [g + (i - (len(tasks) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(positions, means, width, yerr=sds, capsize=4, label=task)
    ax.set_xticks(range(len(groups)), list(groups), rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("final task score (CV: pooled)\nmean ± sd over seeds")
    ax.set_title("Final validation score per task and setting")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def _learning_curve(runs: list[Run], key: str, path: Path) -> Path:
    task = key.split(".")[1]  # task.<name>.train_fraction
    others = [k for k in swept(runs) if k not in (key, "seed")]
    figure = Figure(figsize=(7, 4.5))
    ax = figure.subplots()
    ticks: set[int] = set()
    for name, members in _groups(runs, others).items():
        by_rows: dict[int, list[float]] = defaultdict(list)
        for run in members:
            rows = run.train_rows(task)
            if rows is not None:
                by_rows[rows].append(run.task_score(task, "final"))
        xs = sorted(by_rows)
        ticks.update(xs)
        means = [statistics.fmean(by_rows[x]) for x in xs]
        sds = [statistics.stdev(by_rows[x]) if len(by_rows[x]) > 1 else 0.0 for x in xs]
        ax.errorbar(xs, means, yerr=sds, marker="o", capsize=4, label=name)
    ax.set_xscale("log")
    ax.set_xticks(sorted(ticks), [str(x) for x in sorted(ticks)])
    ax.minorticks_off()
    ax.set_xlabel(f"{task} training rows (log scale)")
    ax.set_ylabel(f"{task} final score (mean ± sd over seeds)")
    ax.set_title(f"Learning curve: {task}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(figure, path)


# ---- the command --------------------------------------------------------------------------


def report(roots: list[Path], out: Path) -> str:
    runs = find_runs(roots)
    sections = [("Runs", run_table(runs))]
    single = [run for run in runs if not run.cv]  # a CV's own spread is in its tables below
    if single and "seed" in swept(single):
        sections.append(("Over seeds", seed_table(single)))
    gains = gain_table(runs)
    if gains[1]:
        sections.append(("Multi-task gain", gains))
    cv_runs = [run for run in runs if run.cv]
    if cv_runs:
        sections.append(("Cross-validation", cv_table(cv_runs)))
    if "seed" in swept(cv_runs):
        sections.append(("Cross-validation over seeds", cv_seed_table(cv_runs)))
    text = "\n\n".join(f"## {title}\n\n{markdown(*table)}" for title, table in sections)
    atomic_write_text(out / "runs.csv", csv_text(*run_table(runs)))
    atomic_write_text(out / "report.md", f"# Report: {len(runs)} runs\n\n{text}\n")
    written = [out / "report.md", out / "runs.csv", *plots(runs, out)]
    return text + "\n\nwritten: " + ", ".join(str(p) for p in written)


class ReportAfterSweep(Callback):
    """A Hydra callback: when a sweep ends, report on it (into its report/ folder)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            print(report([sweep], sweep / "report"))
        except MtlError as e:
            print(f"error: no report of {sweep}: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtl.report",
        description="Tables and plots of runs, sweeps and cross-validations (from metrics.json).",
    )
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="runs or sweeps")
    parser.add_argument("--output", type=Path, help="default: DIR/report for the first DIR")
    args = parser.parse_args(argv)
    print(report(args.dirs, args.output or args.dirs[0] / "report"))
    return 0


if __name__ == "__main__":
    cli.run(main)
