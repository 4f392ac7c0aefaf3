"""Predict with trained models: `python -m mtl.predict MODEL... --input FILE|- [options]`.

Input: CSV, TSV or JSON Lines (by suffix or --format), or plain text lines (`.txt`,
`--format lines`, and stdin by default). Output: the input rows with each task's columns, as
its kind names and fills them (`Task.prediction_columns`): the value in the label scale in a
column named after the task (regression; clamped to the task's range), or the label in
`<task>` and each class's probability in `<task>_prob_<label>` (classification), or the
labels above the threshold (joined by the task's delimiter) in `<task>` and each label's
probability in `<task>_prob_<label>` (multilabel). Token-level tasks (tagging, mlm) are not
predicted here. CSV, TSV or JSON Lines by the output's suffix; JSON Lines on stdout by
default. An empty text is refused (file, line and column named), as in training.

Several models form an ensemble: what each kind averages (regression values, probabilities)
is averaged.
Rows are tokenized once, sorted by length and batched, so padding stays small; the output
keeps the input order.

Python: `Predictor.load("outputs/runs/demo/...").predict(["Ein Satz.", ...])`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from mtl import cli
from mtl.data.batching import collate, sorted_batches
from mtl.data.cache import tokenize
from mtl.data.decoding import decode, read_text
from mtl.data.loading import task_tokenizer
from mtl.data.readers import FORMATS as READ_FORMATS
from mtl.data.readers import Table, read_table
from mtl.errors import MtlError
from mtl.io import atomic_write_text, check_output_file
from mtl.tasks import Task
from mtl.tokenizer import NO_WORD_PIECE, has_word_piece, pad_id
from mtl.trained import TrainedModel, load_all

FORMATS = {suffix: fmt for suffix, fmt in READ_FORMATS.items() if fmt != "conll"}


class Predictor:
    """One model or an ensemble; `predict` maps texts to one dict of outputs per text."""

    def __init__(self, members: list[TrainedModel], device: str | torch.device = "cpu") -> None:
        if not members:
            raise MtlError("no model to predict with")
        self.members = members
        self.device = torch.device(device)
        for member in members:
            member.model.to(self.device)

    @classmethod
    def load(cls, *paths: str | Path, device: str | torch.device = "cpu") -> Predictor:
        return cls(load_all(list(paths)), device)

    @property
    def tasks(self) -> dict[str, Task]:
        """The first member's tasks (every member must have those predicted)."""
        return self.members[0].tasks

    @property
    def predictable(self) -> list[str]:
        """The tasks with a label per text (not tagging or mlm): those predicted by default."""
        return [name for name, task in self.tasks.items() if task.level == "sentence"]

    def columns(self, tasks: list[str]) -> list[str]:
        """The output columns of `tasks`, in order, as each task's kind names them."""
        return [c for name in tasks for c in self.tasks[name].prediction_columns(name)]

    def predict(
        self,
        texts: list[str],
        pairs: list[str] | None = None,
        tasks: list[str] | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> list[dict]:
        """For each text (pair): {task: value or label, task_prob_<label>: p, ...}."""
        tasks = list(tasks or self.predictable)
        self._check(tasks)
        outputs = [
            self._outputs(m, texts, pairs, tasks, batch_size, progress) for m in self.members
        ]
        rows: list[dict] = [{} for _ in texts]
        for name in tasks:
            mean = torch.stack([out[name] for out in outputs]).mean(0)
            predicted = self.tasks[name].prediction_rows(name, mean)
            for row, values in zip(rows, predicted, strict=True):
                row.update(values)
        return rows

    def _check(self, tasks: list[str]) -> None:
        token_level = [t for t in tasks if t in self.tasks and self.tasks[t].level == "token"]
        if token_level:
            raise MtlError(
                f"task {token_level[0]!r} is {self.tasks[token_level[0]].kind}: only tasks "
                f"with a label per text are predicted ({', '.join(self.predictable)})"
            )
        for member in self.members:
            unknown = [t for t in tasks if t not in member.tasks]
            if unknown:
                raise MtlError(
                    f"{member.source}: no task {', '.join(map(repr, unknown))} (its tasks: "
                    f"{', '.join(member.tasks)})"
                )
            for name in tasks:
                if not self.tasks[name].averages_with(member.tasks[name]):
                    raise MtlError(
                        f"{member.source}: task {name!r} differs from the first model's (type or "
                        "classes); an ensemble needs the same tasks"
                    )

    @torch.inference_mode()
    def _outputs(
        self,
        member: TrainedModel,
        texts: list[str],
        pairs: list[str] | None,
        tasks: list[str],
        batch_size: int | None,
        progress: bool,
    ) -> dict:
        """Per task, its kind's `ensemble_output` of every row, e.g. (N, K) or (N, K, C)."""
        results: dict[str, torch.Tensor] = {}
        by_tokenizer: dict[int | None, list[str]] = {}  # tasks grouped by their max_length
        for name in tasks:
            by_tokenizer.setdefault(member.tasks[name].spec.max_length, []).append(name)
        pad = pad_id(member.tokenizer)
        size = batch_size or member.info.get("eval_batch_size", 64)
        for group in by_tokenizer.values():
            tokenizer = task_tokenizer(member.tokenizer, member.tasks[group[0]].spec)
            tokens = tokenize(tokenizer, texts, pairs, prefix=member.text_prefix)
            batches = sorted_batches(tokens.lengths.tolist(), size)
            for rows in tqdm(batches, disable=not progress, desc=f"predict {member.source.name}"):
                batch = {k: v.to(self.device) for k, v in collate(tokens, rows, pad).items()}
                with member.autocast(self.device):
                    encoded = member.model.encode(batch)
                    for name in group:
                        part = self._with_text_features(member.tasks[name], batch, texts, rows)
                        output = member.model.heads[name](encoded, member.model.encoder, part)
                        task, reference = member.tasks[name], self.tasks[name]
                        out = task.ensemble_output(output, reference)
                        if name not in results:
                            results[name] = torch.empty((len(texts), *out.shape[1:]))
                        results[name][rows] = out.float().cpu()
        return results

    def _with_text_features(self, task: Task, batch: dict, texts: list[str], rows: list[int]):
        """The batch, with the task's standardized text statistics if its head takes them."""
        if task.text_features is None:
            return batch
        stats = task.text_features([texts[r] for r in rows]).to(self.device)
        return {**batch, "text_features": stats}


# ---- the command ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtl.predict",
        description="Predict every task of trained models for each row of a file.",
    )
    cli.model_arguments(parser, several=True)
    parser.add_argument("--input", required=True, help="a CSV/TSV/JSONL/.txt file, or - (stdin)")
    parser.add_argument("--output", default="-", help="a .csv/.tsv/.jsonl file, or - (stdout)")
    parser.add_argument("--format", choices=["csv", "tsv", "jsonl", "lines"], help="input format")
    parser.add_argument("--output-format", choices=["csv", "tsv", "jsonl"], help="output format")
    parser.add_argument("--encoding", default="utf-8", help="input encoding (default utf-8)")
    parser.add_argument(
        "--tasks", help="comma-separated tasks to predict (default: all with a label per text)"
    )
    parser.add_argument("--text-column", help="default: the first task's text column")
    parser.add_argument("--text-pair-column", help="default: the first task's, if it has one")
    args = parser.parse_args(argv)
    if args.batch_size is not None and args.batch_size <= 0:
        parser.error("--batch-size must be > 0")

    source = "<stdin>" if args.input == "-" else args.input
    fmt = args.format or ("lines" if args.input == "-" else _format(args.input, FORMATS))
    out_fmt = args.output_format or (
        "jsonl"
        if args.output == "-"
        else _format(args.output, {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"})  # fmt: skip
    )
    if args.output != "-":
        inputs = () if args.input == "-" else (Path(args.input),)
        check_output_file(Path(args.output), "--output", inputs)
    table = _read_input(args.input, fmt, args.encoding)
    predictor = Predictor.load(*args.models, device=cli.device(args.device))
    tasks = _tasks(args.tasks, predictor)
    first = predictor.tasks[tasks[0]].spec
    text_column = args.text_column or ("text" if fmt == "lines" else first.text_column)
    pair_column = args.text_pair_column or (None if fmt == "lines" else first.text_pair_column)
    tokenizers = [member.tokenizer for member in predictor.members]
    texts = _texts(table, source, text_column, tokenizers, "--text-column")
    pairs = (_texts(table, source, pair_column, tokenizers, "--text-pair-column")
             if pair_column else None)  # fmt: skip
    if not texts:
        raise MtlError(f"{source}: no rows to predict")
    columns = predictor.columns(tasks)
    clash = [c for c in columns if c in table.columns]
    if clash:
        raise MtlError(
            f"{source}: the input already has column(s) {', '.join(clash)}, which the "
            "predictions would overwrite; rename them first"
        )
    progress = not args.quiet and sys.stderr.isatty() and len(texts) > 1000
    predictions = predictor.predict(texts, pairs, tasks, args.batch_size, progress)
    rows = [{**values, **p} for (_, values), p in zip(table.rows, predictions, strict=True)]
    text = write_rows(rows, table.columns + columns, out_fmt)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        atomic_write_text(args.output, text)  # no partial file, whatever happens
        print(f"wrote {len(rows)} rows to {args.output}", file=sys.stderr)
    return 0


def _format(path: str, known: dict[str, str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in known:
        raise MtlError(
            f"{path}: cannot tell the format from the suffix {suffix!r} "
            f"(known: {', '.join(known)}); name it with --format / --output-format"
        )
    return known[suffix]


def _read_input(name: str, fmt: str, encoding: str) -> Table:
    if name == "-":
        return read_table("<stdin>", decode(sys.stdin.buffer.read(), "<stdin>", encoding), fmt)
    return read_table(name, read_text(Path(name), encoding, pipe_ok=True), fmt)


def _tasks(selected: str | None, predictor: Predictor) -> list[str]:
    if not selected:
        if not predictor.predictable:
            raise MtlError(f"the model's tasks ({', '.join(predictor.tasks)}) are all token-level")
        return predictor.predictable
    tasks = [t.strip() for t in selected.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in predictor.tasks]
    if unknown or not tasks:
        raise MtlError(
            f"--tasks: unknown task(s) {', '.join(unknown) or '(none given)'}; the model has "
            f"{', '.join(predictor.tasks)}"
        )
    return tasks


def _texts(
    table: Table, source: str, column: str, tokenizers: list[Tokenizer], option: str
) -> list[str]:
    """The column's values; a missing column (`option` chooses another), or a text that is
    missing, empty or has no word piece for one of the models' tokenizers, names the row."""
    if column not in table.columns:
        raise MtlError(
            f"{source}: no column {column!r} (columns: {', '.join(table.columns)}); choose one "
            f"with {option}"
        )
    texts = []
    for line, values in table.rows:
        if values.get(column) is None:  # a JSON Lines row without the key, a short CSV row
            raise MtlError(f"{source}:{line}: column {column!r}: missing")
        text = values[column].strip()
        if not text:
            raise MtlError(f"{source}:{line}: column {column!r}: text is empty")
        if not all(has_word_piece(tokenizer, text) for tokenizer in tokenizers):
            raise MtlError(f"{source}:{line}: column {column!r}: {NO_WORD_PIECE}")
        texts.append(text)
    return texts


def write_rows(rows: list[dict], columns: list[str], fmt: str) -> str:
    """Rows as CSV (RFC 4180), TSV or JSON Lines text. TSV has no quoting: quotes are written as
    they are (the reader does not quote either); tabs and line breaks in values become spaces."""
    if fmt == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    buffer = io.StringIO()
    # CSV ends rows with CRLF (RFC 4180), so that a CR or LF inside a value is quoted
    dialect = (
        {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "quotechar": None, "lineterminator": "\n"}
        if fmt == "tsv"
        else {"lineterminator": "\r\n"}
    )
    writer = csv.writer(buffer, **dialect)
    writer.writerow(columns)
    for row in rows:
        cells = ["" if row.get(c) is None else row[c] for c in columns]
        if fmt == "tsv":
            cells = [re.sub("[\t\r\n]", " ", str(c)) for c in cells]
        writer.writerow(cells)
    return buffer.getvalue()


if __name__ == "__main__":
    cli.run(main)
