"""Using what was trained: evaluate, predict, export, and `encoder.init_from`, through the
commands a user runs (`python -m mtl.evaluate`, `mtl.predict`, `mtl.export`, `mtl.train`)."""

import csv
import json
import math
import os
import pickle
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_vocabulary import TEXTS, assert_predict_encodes_as_transformers

from mtl.errors import MtlError
from mtl.predict import Predictor
from mtl.trained import load

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
TINY = ["encoder=tiny", "trainer.max_steps=12", "trainer.val_check_interval=6"]
PROBE = "+callbacks.initial._target_=probes.InitialWeights"


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, mtl_train) -> Path:
    """A tiny run on both demo tasks, with its step-0 weights saved."""
    tmp = tmp_path_factory.mktemp("a")
    result = mtl_train(
        *TINY, PROBE, f"+callbacks.initial.path={tmp}/initial.safetensors",
        f"hydra.run.dir={tmp}/run", cwd=tmp,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


@pytest.fixture(scope="module")
def exported(run_a, tmp_path_factory, run_module) -> Path:
    out = tmp_path_factory.mktemp("export") / "model"
    result = run_module("mtl.export", str(run_a), str(out), cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def best(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["best"]


def read_csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_reproduces_the_best_validation_metrics(run_a, run_module, tmp_path):
    out = tmp_path / "eval.json"
    result = run_module("mtl.evaluate", str(run_a), "--split", "val", "--output", str(out),
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "demo_complexity/rmse" in result.stdout and "score (mean task score)" in result.stdout
    evaluated, recorded = json.loads(out.read_text()), best(run_a)
    keys = [k for k in recorded if k.startswith("val/")]
    assert len(keys) == 10  # 5 + 2 metrics, a score per task, val/score
    for key in keys:
        assert evaluated[key] == pytest.approx(recorded[key], abs=1e-4), key
    assert evaluated["step"] == recorded["step"]


def test_predicted_validation_file_scores_the_recorded_metrics(run_a, run_module, tmp_path):
    for task, file, column in [
        ("demo_complexity", "complexity/val.csv", "complexity"),
        ("demo_sentiment", "sentiment/val.csv", "label"),
    ]:
        out = tmp_path / f"{task}.csv"
        result = run_module("mtl.predict", str(run_a), "--input", str(DEMO / file),
                            "--output", str(out), "--tasks", task, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        rows = read_csv(out)
        assert len(rows) == 300 and list(rows[0])[:2] == ["sentence", column]
        if task == "demo_complexity":
            errors = [(float(r[task]) - float(r[column])) ** 2 for r in rows]
            score = math.sqrt(sum(errors) / len(errors))
            assert score == pytest.approx(best(run_a)[f"val/{task}/rmse"], abs=1e-4)
        else:
            accuracy = sum(r[task] == r[column] for r in rows) / len(rows)
            assert accuracy == pytest.approx(best(run_a)[f"val/{task}/accuracy"], abs=1e-4)
            p = [
                float(r[f"{task}_prob_positive"]) + float(r[f"{task}_prob_negative"]) for r in rows
            ]
            assert p == pytest.approx([1.0] * len(rows), abs=1e-5)


def test_export_alone_predicts_what_the_run_predicts(run_a, exported, run_module, tmp_path):
    assert {p.name for p in exported.iterdir()} >= {
        "config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "heads.safetensors",
        "mtl.json", "README.md",
    }  # fmt: skip
    assert not [p for p in exported.iterdir() if p.suffix in (".ckpt", ".bin", ".pt", ".pkl")]
    elsewhere = tmp_path / "moved"
    shutil.copytree(exported, elsewhere)  # no path back to the run is needed
    outputs = {}
    for name, model in (("run", run_a), ("export", elsewhere)):
        out = tmp_path / f"{name}.jsonl"
        result = run_module("mtl.predict", str(model), "--input", str(DEMO / "sentiment/val.csv"),
                            "--output", str(out), cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(outputs["run"]) == 300
    for a, b in zip(outputs["run"], outputs["export"], strict=True):
        assert a["demo_sentiment"] == b["demo_sentiment"]
        for key in ("demo_complexity", "demo_sentiment_prob_positive"):
            assert a[key] == pytest.approx(b[key], abs=1e-5)
    card = (elsewhere / "README.md").read_text()
    assert "demo_complexity" in card and "| demo_sentiment | train |" in card
    assert f"| val/score | {best(run_a)['val/score']:.4f} |" in card


def test_exported_encoder_loads_in_transformers(exported):
    transformers = pytest.importorskip("transformers")
    ours = load(exported)
    theirs = transformers.BertModel.from_pretrained(str(exported), add_pooling_layer=False).eval()
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102, 0], [101, 7592, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours.model.encoder(ids, mask).hidden
    assert torch.allclose(got[mask.bool()], expected[mask.bool()], atol=1e-5)


def test_exported_tokenizer_gives_transformers_the_ids_predict_uses(exported, tmp_path):
    """MiniLM's WordPiece exports as BertTokenizer with vocab.txt and its special tokens; an
    export written before those (the class alone, no text prefix) predicts the same."""
    config = json.loads((exported / "tokenizer_config.json").read_text())
    assert (config["tokenizer_class"], config["pad_token"]) == ("BertTokenizer", "[PAD]")
    assert_predict_encodes_as_transformers(exported, "", pad=0)
    old = tmp_path / "old"
    shutil.copytree(exported, old)
    config = {"tokenizer_class": "BertTokenizer", "do_lower_case": True}
    (old / "tokenizer_config.json").write_text(json.dumps(config))
    (old / "special_tokens_map.json").unlink()
    description = json.loads((old / "mtl.json").read_text())
    del description["info"]["text_prefix"]
    (old / "mtl.json").write_text(json.dumps(description))
    assert Predictor.load(old).predict(TEXTS) == Predictor.load(exported).predict(TEXTS)


def test_evaluate_works_from_the_export_on_a_labelled_file(exported, run_a, run_module, tmp_path):
    result = run_module("mtl.evaluate", str(exported), "--input", str(DEMO / "complexity/val.csv"),
                        "--task", "demo_complexity", "--output", str(tmp_path / "e.json"),
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((tmp_path / "e.json").read_text())
    recorded = best(run_a)["val/demo_complexity/rmse"]
    assert evaluated["input/demo_complexity/rmse"] == pytest.approx(recorded, abs=1e-4)
    one = tmp_path / "one.csv"  # a single labelled row: R² and correlations are undefined
    one.write_text("\n".join((DEMO / "complexity/val.csv").read_text().splitlines()[:2]) + "\n")
    result = run_module("mtl.evaluate", str(exported), "--input", str(one),
                        "--task", "demo_complexity", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "error: " + str(one) + ": 1 labelled row; evaluating needs at least 2" in result.stderr
    result = run_module("mtl.evaluate", str(exported), "--input", str(one), "--split", "test",
                        "--task", "demo_complexity", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2  # a usage error: --split was ignored before
    assert "error: --split evaluates the model's own data, --input a file" in result.stderr


def test_init_from_starts_the_encoder_from_the_run_with_fresh_heads(run_a, mtl_train, tmp_path):
    result = mtl_train(
        *TINY, f"encoder.init_from={run_a}", PROBE,
        f"+callbacks.initial.path={tmp_path}/initial.safetensors",
        f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    b_start = load_file(tmp_path / "initial.safetensors")
    a_best = torch.load(run_a / "checkpoints/best.ckpt", weights_only=True)["state_dict"]
    a_start = load_file(run_a.parent / "initial.safetensors")
    encoder = [k for k in b_start if k.startswith("encoder.")]
    heads = [k for k in b_start if k.startswith("heads.")]
    assert encoder and heads
    assert all(torch.equal(b_start[k], a_best[k]) for k in encoder)
    assert not all(torch.equal(b_start[k], a_start[k]) for k in encoder)  # A did train
    assert all(torch.equal(b_start[k], a_start[k]) for k in heads)  # fresh, as A's were
    assert not all(torch.equal(b_start[k], a_best[k]) for k in heads)
    source = json.loads((tmp_path / "run/metrics.json").read_text())["encoder"]
    assert source["init_from"] == str(run_a)
    assert source["checkpoint"] == str(run_a / "checkpoints/best.ckpt")


def test_a_test_split_is_evaluated_with_the_best_checkpoint(mtl_train, run_module, tmp_path):
    (tmp_path / "conf/task").mkdir(parents=True)
    (tmp_path / "conf/task/held.yaml").write_text(
        "held:\n  type: regression\n"
        f"  file: {DEMO}/complexity/train.csv\n"
        "  split: {val_fraction: 0.1, test_fraction: 0.1, seed: 3}\n"
        "  text_column: sentence\n  label_column: complexity\n  range: [1, 7]\n"
    )
    result = mtl_train(
        *TINY, f"hydra.searchpath=[file://{tmp_path}/conf]", "task=[held]",
        f"hydra.run.dir={tmp_path}/run", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    names = ("rmse", "mae", "pearson", "spearman", "r2", "score")
    assert set(metrics["test"]) == {f"test/held/{m}" for m in names} | {"test/score"}
    assert metrics["data"]["held"]["test"]["rows"] == 200
    header = next(line for line in result.stdout.splitlines() if line.startswith("task/metric"))
    assert header.split() == ["task/metric", "start", "best", "final", "test"]
    out = tmp_path / "test.json"
    result = run_module("mtl.evaluate", str(tmp_path / "run"), "--split", "test",
                        "--output", str(out), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(out.read_text())
    for key, value in metrics["test"].items():
        assert evaluated[key] == pytest.approx(value, abs=1e-4), key


def test_python_api_and_ensembles(run_a, exported, tmp_path):
    texts = ["Der Film war gut.", "Die Prüfung des Vertrags erfolgt durch den Ausschuss."]
    single = Predictor.load(run_a).predict(texts)
    assert set(single[0]) == {
        "demo_complexity", "demo_sentiment", "demo_sentiment_prob_negative",
        "demo_sentiment_prob_positive",
    }  # fmt: skip
    assert all(1 <= r["demo_complexity"] <= 7 for r in single)  # the task's range
    first, second = load(run_a), load(run_a)
    with torch.no_grad():  # a second member that differs: shifted head biases
        for head in second.model.heads.values():
            head.net[-1].bias += 0.5
    a, b = Predictor([first]).predict(texts), Predictor([second]).predict(texts)
    both = Predictor([first, second]).predict(texts)
    for ra, rb, r in zip(a, b, both, strict=True):
        assert ra["demo_complexity"] != rb["demo_complexity"]
        assert r["demo_complexity"] == pytest.approx(
            (ra["demo_complexity"] + rb["demo_complexity"]) / 2
        )
        for label in ("negative", "positive"):
            key = f"demo_sentiment_prob_{label}"
            assert r[key] == pytest.approx((ra[key] + rb[key]) / 2, abs=1e-6)
        assert r["demo_sentiment"] == max(("negative", "positive"),
                                          key=lambda c: r[f"demo_sentiment_prob_{c}"])  # fmt: skip
    (tmp_path / "ensemble.json").write_text(json.dumps({"members": [str(run_a), str(exported)]}))
    assert len(Predictor.load(tmp_path).members) == 2  # a directory that names its members
    with pytest.raises(MtlError) as error:  # export and evaluate take one model: it lists them
        load(tmp_path)
    assert str(error.value) == (
        f"{tmp_path}: holds 2 models; name one of them:\n  {run_a / 'checkpoints/best.ckpt'}"
        f"\n  {exported}"
    )


def newer_checkpoint(run: Path, tmp: Path) -> Path:
    ckpt = torch.load(run / "checkpoints/best.ckpt", weights_only=True)
    ckpt["mtl_model"]["format"] = 99
    torch.save(ckpt, tmp / "newer.ckpt")
    return tmp / "newer.ckpt"


def damaged_checkpoint(damage: Callable[[dict], None]):
    """A copy of the run's best.ckpt with `damage` done to it."""

    def make(run: Path, tmp: Path) -> Path:
        ckpt = torch.load(run / "checkpoints/best.ckpt", weights_only=True)
        damage(ckpt)
        torch.save(ckpt, tmp / "damaged.ckpt")
        return tmp / "damaged.ckpt"

    return make


def foreign_checkpoint(run: Path, tmp: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp / "foreign.ckpt")
    return tmp / "foreign.ckpt"


def pickled_checkpoint(run: Path, tmp: Path) -> Path:
    torch.save({"mtl_model": Path("x")}, tmp / "pickled.ckpt")  # a class instance: code, not data
    return tmp / "pickled.ckpt"


def truncated_checkpoint(run: Path, tmp: Path) -> Path:
    data = (run / "checkpoints/best.ckpt").read_bytes()
    (tmp / "cut.ckpt").write_bytes(data[: len(data) // 2])
    return tmp / "cut.ckpt"


def checkpoint_head(run: Path, tmp: Path) -> Path:
    (tmp / "head.ckpt").write_bytes((run / "checkpoints/best.ckpt").read_bytes()[:5000])
    return tmp / "head.ckpt"  # torch's zip reader fails with an OSError (EINVAL) here


def plain_pickle(run: Path, tmp: Path) -> Path:
    (tmp / "plain.ckpt").write_bytes(pickle.dumps({"mtl_model": {}}, protocol=4))
    return tmp / "plain.ckpt"


def export_without_heads(exported: Path, tmp: Path) -> Path:
    shutil.copytree(exported, tmp / "broken")
    (tmp / "broken/heads.safetensors").unlink()
    return tmp / "broken"


def export_without_info(export: Path, tmp: Path) -> Path:
    shutil.copytree(export, tmp / "noinfo")
    described = json.loads((tmp / "noinfo/mtl.json").read_text())
    del described["info"]
    (tmp / "noinfo/mtl.json").write_text(json.dumps(described))
    return tmp / "noinfo"


def self_listing_ensemble(run: Path, tmp: Path) -> Path:
    (tmp / "ens").mkdir()
    (tmp / "ens/ensemble.json").write_text(json.dumps({"members": [str(run), "."]}))
    return tmp / "ens"


def sweep_directory(run: Path, tmp: Path) -> Path:
    for job in ("0_seed=1", "1_seed=2"):
        (tmp / "sweep" / job / "checkpoints").mkdir(parents=True)
        shutil.copy(run / "checkpoints/best.ckpt", tmp / "sweep" / job / "checkpoints")
    return tmp / "sweep"


def input_file(text: str, name: str = "in.csv", encoding: str = "utf-8"):
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(text.encode(encoding))
        return tmp / name

    return make


GOOD = input_file("sentence\nDer Film war gut.\n")


@pytest.mark.parametrize(
    ("model", "make_input", "extra", "message"),
    [
        (None, input_file(""), [], r"in\.csv: the file is empty \(expected a header row\)"),
        (None, input_file("sentence\n"), [], r"in\.csv: no rows to predict"),
        (None, input_file("satz\nhallo\n"), [], r"in\.csv: no column 'sentence' \(columns: satz\); choose one with --text-column"),
        (None, input_file("sentence,x\ngut,1\n ,2\n"), [], r"in\.csv:3: column 'sentence': text is empty"),
        (None, input_file('{"sentence": "gut"}\n{"text": "gut"}\n', name="in.jsonl"), [], r"in\.jsonl:2: column 'sentence': missing"),
        (None, GOOD, ["--text-pair-column", "nope"], r"in\.csv: no column 'nope' \(columns: sentence\); choose one with --text-pair-column"),
        (None, input_file("gut\n\u200b\u200d\n", name="in.txt"), [], r"in\.txt:2: column 'text': no word piece after the tokenizer's normalization"),
        (None, input_file('{"sentence": "gut"}\n{"sentence": "\\udc80"}\n', name="in.jsonl"), [], r"in\.jsonl:2: column 'sentence': a lone surrogate \\udc80 at character 1"),
        (None, input_file("sentence\nSchöne Grüße\n", encoding="cp1252"), [], r"in\.csv:2: cannot decode byte 0xf6 as utf-8"),
        (None, GOOD, ["--tasks", "demo_complexity,nope"], r"--tasks: unknown task\(s\) nope; the model has demo_complexity, demo_sentiment"),
        (None, input_file("sentence\ngut\n", name="in.xlsx"), [], r"in\.xlsx: cannot tell the format from the suffix '\.xlsx'"),
        (None, input_file("sentence,demo_sentiment\ngut,x\n"), [], r"in\.csv: the input already has column\(s\) demo_sentiment, which the predictions would overwrite"),
        (newer_checkpoint, GOOD, [], r"newer\.ckpt: written by a newer mtl \(format 99; this one reads format 1\); upgrade mtl"),
        (foreign_checkpoint, GOOD, [], r"foreign\.ckpt: not an mtl checkpoint \(it has no 'mtl_model' entry"),
        (damaged_checkpoint(lambda c: c.pop("state_dict")), GOOD, [], r"damaged\.ckpt: damaged mtl checkpoint: its 'state_dict' entry is missing, not a mapping"),
        (damaged_checkpoint(lambda c: c.update(mtl_model="x")), GOOD, [], r"damaged\.ckpt: damaged mtl checkpoint: its 'mtl_model' entry is a str, not a mapping"),
        (damaged_checkpoint(lambda c: c["mtl_model"].update(tasks="x")), GOOD, [], r"damaged\.ckpt: damaged mtl checkpoint: its 'mtl_model\.tasks' entry is a str, not a mapping"),
        (damaged_checkpoint(lambda c: c["mtl_model"].pop("tokenizer")), GOOD, [], r"damaged\.ckpt: damaged mtl checkpoint: its 'mtl_model\.tokenizer' entry is missing, not a str"),
        (damaged_checkpoint(lambda c: c["mtl_model"].update(max_length=-1)), GOOD, [], r"damaged\.ckpt: damaged mtl checkpoint: its 'mtl_model\.max_length' entry is -1, not a positive number"),
        (damaged_checkpoint(lambda c: c["mtl_model"].update(tokenizer="{not json")), GOOD, [], r"damaged\.ckpt: damaged mtl checkpoint: its 'mtl_model\.tokenizer' entry cannot be read"),
        (damaged_checkpoint(lambda c: c["mtl_model"].update(encoder=None)), GOOD, [], r"damaged\.ckpt: damaged mtl checkpoint: its 'mtl_model\.encoder' entry is missing, not a mapping"),
        (damaged_checkpoint(lambda c: c["mtl_model"]["tasks"].update(demo_sentiment=[])), GOOD, [], r"damaged\.ckpt: its task descriptions cannot be read"),
        (damaged_checkpoint(lambda c: c["state_dict"]["heads.demo_complexity.net.1.weight"].fill_(float("nan"))), GOOD, [], r"damaged\.ckpt: weight heads\.demo_complexity\.net\.1\.weight holds NaN or infinity"),
        (pickled_checkpoint, GOOD, [], r"pickled\.ckpt: holds objects other than tensors and plain data \(pathlib\.\w*Path\)"),
        (truncated_checkpoint, GOOD, [], r"cut\.ckpt: not a readable checkpoint \(truncated"),
        (checkpoint_head, GOOD, [], r"head\.ckpt: not a readable checkpoint \(truncated"),
        (plain_pickle, GOOD, [], r"plain\.ckpt: not a readable checkpoint \(truncated"),
        (export_without_heads, GOOD, [], r"broken: the exported model is missing heads\.safetensors"),
        (export_without_info, GOOD, [], r"noinfo/mtl\.json: key 'info' is missing or not an object"),
        (self_listing_ensemble, GOOD, [], r"ens/ensemble\.json: the ensemble lists itself \(a cycle\)"),
        (sweep_directory, GOOD, [], r"sweep holds 2 runs \(a sweep\?\); name the ones to use.*\n.*0_seed=1\n.*1_seed=2"),
        (lambda run, tmp: tmp / "nowhere", GOOD, [], r"nowhere: no such file or directory"),
    ],
    ids=[
        "empty-file", "header-only", "no-text-column", "empty-text", "missing-key", "no-pair-column", "no-word-piece", "lone-surrogate", "undecodable", "unknown-task",
        "unknown-suffix", "column-clash", "newer-format", "not-mtl", "no-state-dict", "model-a-str",
        "tasks-a-str", "no-tokenizer", "negative-max-length", "tokenizer-not-json", "no-encoder", "task-a-list", "nan-weights", "pickle", "truncated", "first-5kB", "plain-pickle",
        "export-missing-file", "export-missing-key", "ensemble-cycle", "sweep-dir", "missing-path",
    ],
)  # fmt: skip
def test_bad_input_to_predict_is_one_clear_line(
    run_a, exported, run_module, tmp_path, model, make_input, extra, message
):
    source = exported if model in (export_without_heads, export_without_info) else run_a
    model_path = model(source, tmp_path) if model else run_a
    out = tmp_path / "out.csv"
    result = run_module("mtl.predict", str(model_path), "--input", str(make_input(tmp_path)),
                        "--output", str(out), *extra, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert re.search(r"error: \S*" + message, result.stderr), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    assert "Warning" not in result.stderr  # torch's about the pickle protocol, say
    assert not out.exists() and not list(tmp_path.glob(".out.csv.*"))  # no partial output


def test_predict_reads_a_pipe_and_crlf_lines(run_a, run_module, tmp_path):
    """`--input <(...)` is a pipe: predict reads it once, as a file; a Windows line end is not
    part of the echoed text."""
    pipe = tmp_path / "pipe.txt"
    os.mkfifo(pipe)
    writer = threading.Thread(
        target=pipe.write_bytes, args=(b"Der Film war gut.\r\nSchlecht.\r\n",)
    )
    writer.start()
    result = run_module("mtl.predict", str(run_a), "--input", str(pipe), cwd=tmp_path)
    writer.join()
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["Der Film war gut.", "Schlecht."]


@pytest.mark.parametrize("case", ["directory", "fifo", "the-input", "a-checkpoint", "under-a-file"])
def test_predict_refuses_an_output_it_must_not_write(run_a, run_module, tmp_path, case):
    given = GOOD(tmp_path)
    checkpoint = tmp_path / "copy.ckpt"
    shutil.copy(run_a / "checkpoints/best.ckpt", checkpoint)
    before = checkpoint.read_bytes()
    (tmp_path / "afile").write_text("")
    # fmt: off
    out, message = {
        "directory": (tmp_path / "out.csv", "--output {}: is a directory; give a file path"),
        "fifo": (tmp_path / "out.csv", r"--output {}: not a regular file \(a FIFO or device\)"),
        "the-input": (given, "--output {}: is a file this command reads"),
        "a-checkpoint": (checkpoint, "--output {}: is a checkpoint, weights or a run's record, which mtl does not overwrite"),
        "under-a-file": (tmp_path / "afile/out.csv", "--output {}: .*afile is a file, not a directory"),
    }[case]
    # fmt: on
    if case == "directory":
        out.mkdir()
    elif case == "fifo":
        os.mkfifo(out)  # writing it would block until a reader came, then replace it
    result = run_module("mtl.predict", str(run_a), "--input", str(given), "--output", str(out),
                        "--output-format", "csv", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert re.search("error: " + message.format(re.escape(str(out))), result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert given.read_text() == "sentence\nDer Film war gut.\n"  # the input is untouched
    assert checkpoint.read_bytes() == before


def test_evaluate_refuses_to_write_over_the_data_it_reads(run_a, run_module, tmp_path):
    data = json.loads((run_a / "metrics.json").read_text())["data"]
    val = Path(next(iter(data.values()))["val"]["file"])
    before = val.read_bytes()
    result = run_module("mtl.evaluate", str(run_a), "--split", "val", "--output", str(val),
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and "is a file this command reads" in result.stderr
    assert val.read_bytes() == before


def test_a_killed_writes_temporaries_go_with_the_next_write(run_a, exported, run_module, tmp_path):
    """predict's output and export's directory are written under temporary names first; what a
    SIGKILL left of them is removed the next time that output is written."""
    stale_file, stale_dir = (
        tmp_path / ".out.csv.0123456789ab.tmp",
        tmp_path / ".model.0123456789ab.tmp",
    )
    stale_file.write_text("half")
    stale_dir.mkdir()
    (stale_dir / "config.json").write_text("{")
    other = tmp_path / ".other.csv.0123456789ab.tmp"  # not this output's: kept
    other.write_text("x")
    result = run_module("mtl.predict", str(run_a), "--input", str(GOOD(tmp_path)), "--output",
                        str(tmp_path / "out.csv"), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_module("mtl.export", str(run_a), str(tmp_path / "model"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert not stale_file.exists() and not stale_dir.exists() and other.exists()
    assert (tmp_path / "out.csv").is_file() and (tmp_path / "model/mtl.json").is_file()


def test_export_refuses_to_overwrite(run_a, exported, run_module, tmp_path):
    before = (exported / "mtl.json").read_bytes()
    result = run_module("mtl.export", str(run_a), str(exported), cwd=tmp_path)
    assert result.returncode == 1
    assert f"error: {exported} already exists and is not empty" in result.stderr
    assert (exported / "mtl.json").read_bytes() == before
    (tmp_path / "afile").write_text("")
    result = run_module("mtl.export", str(run_a), str(tmp_path / "afile"), cwd=tmp_path)
    assert result.returncode == 1
    assert f"error: {tmp_path / 'afile'} is a file, not a directory" in result.stderr
