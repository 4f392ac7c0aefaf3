"""Evaluate a trained model: `python -m mtl.evaluate MODEL [--split val|test|train]
[--input FILE --task NAME] [--output FILE.json]`.

Metrics are computed by the same code as validation during training (the tasks' metrics, in
the model's precision and evaluation batching), so `--split val` on a run reproduces the
validation metrics metrics.json recorded for its best step. The splits are read again from
the task files the run was trained on, and split by the same rules. Results are named as in
metrics.json: `<split>/<task>/<metric>` and `<split>/score`; `--input` gives `input/...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from mtl import cli
from mtl.data.batching import sorted_batches
from mtl.data.fingerprint import check_unchanged
from mtl.data.loading import DataConfig, TaskDataset, declared_splits, load_task
from mtl.errors import DataError, MtlError
from mtl.io import atomic_write_text, check_output_file
from mtl.trained import TrainedModel, load


@torch.inference_mode()
def evaluate(
    trained: TrainedModel,
    datasets: dict[str, TaskDataset],
    prefix: str,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """`<prefix>/<task>/<metric>` for each task's dataset, and `<prefix>/score`."""
    model = trained.model.to(device)
    metrics = model.new_metrics().to(device)
    for part in _parts(trained, datasets, device, batch_size, progress):
        with trained.autocast(torch.device(device)):
            model.update_metrics(metrics, part)
    return model.compute_metrics(metrics, prefix)


@torch.inference_mode()
def predictions(
    trained: TrainedModel, datasets: dict[str, TaskDataset], device: torch.device | str = "cpu"
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per task: (predictions in label space, labels), in the dataset's row order."""
    model = trained.model.to(device)
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for name, dataset in datasets.items():
        predicted = torch.empty_like(dataset.targets)
        for part in _parts(trained, {name: dataset}, device, None, False):
            with trained.autocast(torch.device(device)):
                values = trained.tasks[name].predict(model(part))
            predicted[part["rows"].cpu()] = values.to(predicted.dtype).cpu()
        out[name] = (predicted, dataset.targets)
    return out


def _parts(trained: TrainedModel, datasets: dict[str, TaskDataset], device, batch_size, progress):
    """Each dataset in length-sorted batches of the model's evaluation size, on `device`."""
    size = batch_size or trained.info.get("eval_batch_size", 64)
    for name, dataset in datasets.items():
        batches = sorted_batches(dataset.lengths, size)
        for rows in tqdm(batches, disable=not progress, desc=f"evaluate {name}"):
            yield {k: v.to(device) if isinstance(v, Tensor) else v
                   for k, v in dataset.batch(rows).items()}  # fmt: skip


def split_datasets(
    trained: TrainedModel, split: str, allow_changed_data: bool = False
) -> dict[str, TaskDataset]:
    """Each task's `split`, read from the files the model was trained on (tasks without that
    split are left out), refused if a file changed since (mtl/data/fingerprint.py) unless
    `allow_changed_data`, which prints what changed."""
    cfg = DataConfig(on_bad_row=trained.info.get("on_bad_row", "error"))
    seed = trained.info.get("seed", 0)
    datasets, current = {}, {}
    for name, task in trained.tasks.items():
        if split in declared_splits(task.spec):
            data = load_task(name, task.spec, trained.tokenizer, cfg, seed, task, [split],
                             trained.text_prefix)  # fmt: skip
            datasets[name], current[name] = data.splits[split], data.summary()
    recorded = trained.info.get("data") or {}
    for change in check_unchanged(recorded, current, allow_changed_data, "--allow-changed-data"):
        print(f"warning: {change}; evaluated anyway (--allow-changed-data)")
    if not datasets:
        raise MtlError(f"no task of {trained.source} has a {split} split")
    return datasets


def file_dataset(trained: TrainedModel, task: str, path: str, args) -> dict[str, TaskDataset]:
    """A labelled file of one task, read with the task's columns unless overridden."""
    if task not in trained.tasks:
        raise MtlError(f"--task: no task {task!r} (the model has {', '.join(trained.tasks)})")
    fitted = trained.tasks[task]
    if args.label_column and not fitted.columns:
        raise MtlError(f"--label-column: task {task!r} ({fitted.kind}) reads no labels")
    label = {"label_column": args.label_column} if args.label_column else {}
    spec = dataclasses.replace(
        fitted.spec,
        files={"input": path},
        file=None,
        format=args.format or None,
        encoding=args.encoding or fitted.spec.encoding,
        text_column=args.text_column or fitted.spec.text_column,
        text_pair_column=args.text_pair_column or fitted.spec.text_pair_column,
        **label,
    )
    cfg = DataConfig(on_bad_row=trained.info.get("on_bad_row", "error"))
    data = load_task(task, spec, trained.tokenizer, cfg, 0, fitted, ["input"], trained.text_prefix)
    rows = len(data.splits["input"])
    if rows < 2:  # R², correlations, AUROC: undefined on one row
        raise DataError(f"{path}: {rows} labelled row; evaluating needs at least 2")
    return {task: data.splits["input"]}


def format_results(results: dict[str, float]) -> str:
    rows = [f"{'task/metric':<40}{'value':>10}"]
    for key, value in results.items():
        name = key.split("/", 1)[1]
        rows.append(f"{'score (mean task score)' if name == 'score' else name:<40}{value:>10.4f}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtl.evaluate",
        description="Metrics of a trained model on a split of its tasks' data or on a file.",
    )
    cli.model_arguments(parser, several=False)
    parser.add_argument(
        "--split", choices=["val", "test", "train"],
        help="a split of the data the model was trained on (default: val)",
    )  # fmt: skip
    parser.add_argument("--input", help="a labelled CSV/TSV/JSONL file of one task (--task)")
    parser.add_argument("--task", help="the task the --input file belongs to")
    parser.add_argument("--format", choices=["csv", "tsv", "jsonl"], help="--input's format")
    parser.add_argument("--encoding", help="--input's encoding (default: the task's)")
    parser.add_argument("--text-column", help="--input's text column (default: the task's)")
    parser.add_argument("--text-pair-column", help="--input's pair column (default: the task's)")
    parser.add_argument("--label-column", help="--input's label column (default: the task's)")
    parser.add_argument("--output", help="also write the results to this JSON file")
    parser.add_argument(
        "--allow-changed-data", action="store_true",
        help="evaluate --split even if a data file changed since the run was trained",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if bool(args.input) != bool(args.task):
        parser.error("--input and --task go together")
    if args.input and args.split:
        parser.error("--split evaluates the model's own data, --input a file: give one of them")
    if args.batch_size is not None and args.batch_size <= 0:
        parser.error("--batch-size must be > 0")

    trained = load(args.models)
    if args.output:  # not a file this reads: the input, or the data the model was trained on
        recorded = trained.info.get("data") or {}
        data = [Path(s["file"]) for splits in recorded.values() for s in splits.values()]
        inputs = (*data, *([Path(args.input)] if args.input else []))
        check_output_file(Path(args.output), "--output", inputs)
    if args.input:
        datasets, prefix = file_dataset(trained, args.task, args.input, args), "input"
    else:
        prefix = args.split or "val"
        datasets = split_datasets(trained, prefix, args.allow_changed_data)
    progress = not args.quiet and sys.stderr.isatty()
    results = evaluate(trained, datasets, prefix, cli.device(args.device), args.batch_size,
                       progress)  # fmt: skip
    print(f"model: {trained.source} (step {trained.info.get('step', '?')})")
    print(format_results(results))
    if args.output:
        record = {"model": str(trained.source), "step": trained.info.get("step"), **results}
        atomic_write_text(Path(args.output), json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    cli.run(main)
