"""Export a trained model as a self-contained directory: `python -m mtl.export MODEL OUT_DIR`.

    OUT_DIR/config.json, model.safetensors,    the encoder in the Hugging Face layout
            tokenizer.json, tokenizer_config.json, (transformers.AutoModel.from_pretrained and
            special_tokens_map.json, ...       AutoTokenizer.from_pretrained load them)
            heads.safetensors                  one head per task
            mtl.json                           task specs and fitted states, run info (with
                                               the text prefix, if the model has one)
            README.md                          the model card

Nothing in it is a pickle; predict and evaluate read it without the run directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtl import cli, e5
from mtl.errors import MtlError
from mtl.io import atomic_write_text, fresh_directory, read_json_object
from mtl.model import CHECKPOINT_FORMAT
from mtl.pretrained import save_pretrained
from mtl.tasks import spec_dict
from mtl.tensor_files import atomic_save_safetensors
from mtl.trained import EXPORT_FILE, HEADS_FILE, TrainedModel, load


def export(trained: TrainedModel, out: Path) -> None:
    """Write `trained` to `out`, which must not exist yet (or be empty); all or nothing."""
    with fresh_directory(out) as tmp:
        save_pretrained(trained.model.encoder, trained.tokenizer, tmp)
        heads = {k: v.contiguous() for k, v in trained.model.heads.state_dict().items()}
        atomic_save_safetensors(heads, tmp / HEADS_FILE)
        description = {
            "format": CHECKPOINT_FORMAT,
            "tasks": {
                name: {"spec": spec_dict(task.spec), "state": task.state()}
                for name, task in trained.tasks.items()
            },
            "info": {**trained.info, "exported_from": str(trained.source)},
        }
        atomic_write_text(tmp / EXPORT_FILE, json.dumps(description, indent=2) + "\n")
        atomic_write_text(tmp / "README.md", model_card(trained, out))


def run_metrics(source: Path) -> dict:
    """The metrics.json of the run a checkpoint belongs to ({} if there is none)."""
    for folder in (source.parent, source.parent.parent):
        file = folder / "metrics.json"
        if file.is_file():
            return read_json_object(file)
    return {}


def model_card(trained: TrainedModel, out: Path) -> str:
    info = trained.info
    lines = [
        f"# mtl model: {', '.join(trained.tasks)}",
        "",
        f"One shared encoder ({trained.model.encoder.cfg.to_hf()['model_type']}) with a head "
        f"per task, trained by `mtl` for {info.get('step', '?')} optimizer steps; exported "
        f"from `{trained.source}`.",
        "",
        "## Tasks",
        "",
        "| task | type | predicts | text column |",
        "| --- | --- | --- | --- |",
    ]
    for name, task in trained.tasks.items():
        text = f"`{task.spec.text_column}`"
        text += f" + `{task.spec.text_pair_column}`" if task.spec.text_pair_column else ""
        if task.spec.features:
            text += f", with text statistics {', '.join(task.spec.features)}"
        lines.append(f"| {name} | {task.kind} | {task.describe_output()} | {text} |")
    lines += ["", "## Data", "", "| task | split | file | rows |", "| --- | --- | --- | --- |"]
    for name, splits in info.get("data", {}).items():
        for split, entry in splits.items():
            lines.append(f"| {name} | {split} | `{entry['file']}` | {entry['rows']} |")
    lines += ["", "## Metrics", ""]
    tables = {"validation at this step": info.get("metrics", {})}
    tables["test (best checkpoint)"] = run_metrics(trained.source).get("test", {})
    for title, metrics in tables.items():
        if metrics:
            lines += [f"{title}:", "", "| metric | value |", "| --- | --- |"]
            lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items() if k != "step"] + [""]
    if not any(tables.values()):
        lines += ["No metrics were recorded with this checkpoint.", ""]
    lines += [
        "## Use",
        "",
        "```bash",
        f"python -m mtl.predict {out} --input sentences.txt       # one text a line",
        f"python -m mtl.evaluate {out} --input labelled.csv --task {next(iter(trained.tasks))}",
        "```",
        "",
        "```python",
        "from mtl.predict import Predictor",
        f'Predictor.load("{out}").predict(["Ein Beispielsatz."])',
        "```",
        "",
        "The encoder alone loads in `transformers.AutoModel.from_pretrained` (the pooling mtl "
        f"used is `{trained.model.encoder.cfg.pooling}`, recorded as `pooling` in config.json), "
        "its tokenizer in `transformers.AutoTokenizer.from_pretrained`.",
        *_prefix_note(trained.text_prefix),
        f"Precision: `{info.get('precision', '?')}`; maximum length: {info.get('max_length')} "
        "tokens.",
        "",
    ]
    lines += ["## Encoder", "", f"Its weights started from {_source(info)}.", ""]
    if info.get("config"):
        lines += ["## Training config", "", "```yaml", info["config"].rstrip(), "```", ""]
    return "\n".join(lines)


def _prefix_note(prefix: str | None) -> list[str]:
    if prefix is None:
        return []
    return [
        f"Every text was read after the prefix `{json.dumps(prefix)}` (`text_prefix` in "
        "mtl.json's info; not before a pair's second text): mtl.predict and mtl.evaluate put it "
        "there themselves; put it before each text when you use the encoder directly."
    ]


def _source(info: dict) -> str:
    source = info.get("encoder_source") or {}
    if source.get("init_from"):
        return f"the mtl model `{source['init_from']}` (`{source['checkpoint']}`)"
    if source.get("pretrained") == e5.NAME:
        return f"the pretrained encoder `{e5.NAME}`: {e5.CARD_NOTE}"
    if source.get("pretrained"):
        return f"the pretrained encoder `{source['pretrained']}`"
    return "a random initialization (trained from scratch)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtl.export",
        description="Write a trained model as a self-contained directory (Hugging Face "
        "encoder, heads, task descriptions, model card).",
    )
    parser.add_argument("model", metavar="MODEL", help="a run directory or a checkpoint file")
    parser.add_argument("out", metavar="OUT_DIR", help="a new directory")
    args = parser.parse_args(argv)
    trained = load(args.model)
    if trained.source.is_dir():
        raise MtlError(f"{args.model} is already an exported model; copy the directory instead")
    export(trained, Path(args.out))
    print(f"exported {trained.source} to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    cli.run(main)
