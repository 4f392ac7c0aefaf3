"""Hostile but realistic input and faults, one row each: every case ends in one clear line
naming the file, line, column or key (exit code 1, no traceback), or does the right thing.

Data files are read through the loading phase training uses (fast, in-process); settings,
checkpoints and faults go through `python -m mtl.train` itself.
"""

import errno
import io
import json
import os
import pickle
import random
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from probes import read_trace

from mtl.data.loading import DataConfig, OnBadRow, load_task
from mtl.errors import MtlError
from mtl.pretrained import EncoderConfig, build_encoder, resolve_pretrained
from mtl.tasks import SplitSpec, TaskSpec
from mtl.tokenizer import load_tokenizer
from mtl.train import check_run
from mtl.validation import typed

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["encoder=tiny", "trainer.max_steps=4", "trainer.val_check_interval=2"]
ROWS = "".join(f"row {i},{i % 7}\n" for i in range(40))


def lines(n: int, start: int = 0) -> str:
    return "".join(f"row {i},{i % 7}\n" for i in range(start, start + n))


# (id, file body, task settings, on_bad_row, expected: an error regex or (rows, skipped))
UNCLOSED = "text,y\n" + lines(5) + '"unclosed row,1\n' + lines(19, 5)
STRAY = (
    "text,y\n" + lines(10) + '"stray row,1\n' + lines(4, 10) + 'row "x" here,2\n' + lines(25, 14)
)
BAD_JSON = '{"text": "a", "y": 1}\n{"text": "b", "y": \n{"text": "c", "y": 2}\n'
CLASSES = {"type": "classification", "labels": ["neg", "pos"]}
SURROGATE = '{"text": "a", "y": 1}\n{"text": "a \\ud800 b", "y": 1}\n{"text": "c", "y": 2}\n'  # JSON escapes
# fmt: off
DATA_CASES = [
    ("csv-field-over-131072-chars", "text,y\n" + "lang " * 40_000 + ",1\n" + ROWS, {}, "error", (41, 0)),
    ("unclosed-quote", UNCLOSED, {}, "error", r"q\.csv:7: the quote opened on line 7 is never closed \(it runs over the 20 lines to the end of the file\)"),
    ("unclosed-quote-skipped", UNCLOSED, {}, "skip", (24, 1)),
    ("stray-quote", STRAY, {}, "error", r"q\.csv:12: a quote opened on line 12 runs over 6 line\(s\), then"),
    ("stray-quote-skipped", STRAY, {}, "skip", (40, 1)),
    ("quoted-line-breaks-are-fine", 'text,y\n"a text\nover three\nlines",1\n' + ROWS, {}, "error", (41, 0)),
    ("duplicate-header", "text,y,y\na,1,2\n" + ROWS, {}, "error", r"q\.csv:1: column 'y' appears more than once in the header"),
    ("label-beyond-float32", "text,y\n" + lines(3) + "big,1e39\n", {}, "error", r"q\.csv:5: column 'y': label '1e39' is too large for float32"),
    ("label-beyond-float32-skipped", "text,y\n" + lines(3) + "big,1e39\n", {}, "skip", (3, 1)),
    ("header-only", "text,y\n", {}, "error", r"q\.csv: has no data rows after its header"),
    ("malformed-jsonl", BAD_JSON, {"format": "jsonl"}, "error", r"q\.csv:2: invalid JSON at character \d+"),
    ("malformed-jsonl-skipped", BAD_JSON, {"format": "jsonl"}, "skip", (2, 1)),
    ("one-class-in-train", "text,y\na,pos\nb,pos\n", CLASSES, "error", r"task\.t: the training rows hold 1 class\(es\) \['pos'\]; a classifier needs rows of at least 2"),
    ("directory", None, {}, "error", r"q\.csv: is a directory, not a data file"),
    ("lone-surrogate-jsonl", SURROGATE, {"format": "jsonl"}, "error", r"q\.csv:2: column 'text': a lone surrogate \\ud800 at character 3, which is not text"),
    ("lone-surrogate-jsonl-skipped", SURROGATE, {"format": "jsonl"}, "skip", (2, 1)),
    ("no-word-piece", "text,y\n" + lines(3) + "\u200b\u200b\x01,1\n", {}, "error", r"q\.csv:5: column 'text': no word piece after the tokenizer's normalization"),
    ("no-word-piece-skipped", "text,y\n" + lines(3) + "\u0301\u200d,1\n" + lines(2, 3), {}, "skip", (5, 1)),
    ("no-word-piece-in-a-pair", "text,p,y\n" + "".join(f"a{i},b{i},1\n" for i in range(3)) + "a,\ufeff\u200b,1\n", {"text_pair_column": "p"}, "error", r"q\.csv:5: column 'p': no word piece"),
]
# fmt: on


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(resolve_pretrained("minilm"), max_length=32)


@pytest.mark.parametrize(
    ("body", "settings", "on_bad_row", "expected"),
    [c[1:] for c in DATA_CASES],
    ids=[c[0] for c in DATA_CASES],
)
def test_data_files(tmp_path, tokenizer, body, settings, on_bad_row, expected):
    path = tmp_path / "q.csv"
    if body is None:
        path.mkdir()
    else:
        path.write_text(body, encoding="utf-8")
    kw = {"type": "regression", "text_column": "text", "label_column": "y", **settings}
    spec = TaskSpec(files={"train": str(path), "val": str(path)}, **kw)
    cfg = DataConfig(on_bad_row=OnBadRow(on_bad_row))
    if isinstance(expected, str):
        with pytest.raises(MtlError) as error:
            load_task("t", spec, tokenizer, cfg, seed=0)
        assert re.search(expected, str(error.value)), str(error.value)
        assert "\n" not in str(error.value)
    else:
        data = load_task("t", spec, tokenizer, cfg, seed=0)
        rows, skipped = expected
        assert len(data.splits["train"]) == rows
        assert data.skipped == 2 * skipped  # the same file is the train and the val split


def global_task_file(tmp_path: Path, body: str) -> list[str]:
    """A task config that also writes outside its task (`# @package _global_`)."""
    (tmp_path / "conf/task").mkdir(parents=True)
    (tmp_path / "conf/task/sneaky.yaml").write_text("# @package _global_\n" + body)
    return [f"hydra.searchpath=[file://{tmp_path}/conf]", "task=[demo_complexity,sneaky]"]


def broken_encoder(tmp_path: Path, which: str) -> list[str]:
    source = resolve_pretrained("minilm")
    folder = tmp_path / "encoder"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        data = (source / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 3] if name == which else data)
    return [f"encoder.pretrained={folder}"]


def write_file(tmp_path: Path, name: str, data: bytes) -> Path:
    (tmp_path / name).write_bytes(data)
    return tmp_path / name


class Payload:
    """A pickle that would run a shell command if it were loaded as code."""

    def __reduce__(self):
        return (os.system, ("touch pwned",))


# (id, through: "cli" runs `python -m mtl.train`; "check" runs, in this process, the checks the
#  command runs before it builds anything; setup(tmp_path) -> overrides, expected error regex)
# fmt: off
SETTING_CASES = [
    ("misspelt-plus-key", "cli", lambda t: ["+encoder.poolng=cls"], r"encoder\.poolng: unknown key \(did you mean encoder\.pooling\?\)"),
    ("misspelt-plus-data-key", "check", lambda t: ["+data.batchsize=8"], r"data\.batchsize: unknown key \(did you mean data\.batch_size\?\)"),
    ("misspelt-trainer-argument", "check", lambda t: ["+trainer.max_stepz=8"], r"trainer\.max_stepz: unknown key \(did you mean trainer\.max_steps\?\)"),
    ("misspelt-sampler-argument", "check", lambda t: ["+sampler.temprature=3"], r"sampler\.temprature: unknown key \(did you mean sampler\.temperature\?\)"),
    ("negative-batch-size", "cli", lambda t: ["data.batch_size=-4"], r"data\.batch_size: must be > 0, got -4"),
    ("zero-batch-size", "check", lambda t: ["data.batch_size=0"], r"data\.batch_size: must be > 0, got 0"),
    ("zero-eval-batch-size", "check", lambda t: ["data.eval_batch_size=0"], r"data\.eval_batch_size: must be > 0, got 0"),
    ("negative-max-length", "check", lambda t: ["encoder.max_length=-5"], r"encoder\.max_length: must be > 2 \(it counts the special tokens around a text, such as \[CLS\] and \[SEP\]\), got -5"),
    ("negative-steps", "check", lambda t: ["trainer.max_steps=-1"], r"trainer\.max_steps: must be a number of steps > 0, got -1"),
    ("train-fraction", "check", lambda t: ["task.demo_complexity.train_fraction=1.5"], r"task\.demo_complexity\.train_fraction: must be in \(0, 1\], got 1\.5"),
    ("resume-keyword", "cli", lambda t: ["resume=last"], r"resume=last: no such run directory or checkpoint file"),
    ("resume-run-without-checkpoint", "check", lambda t: [f"resume={t}"], r"resume=.*: the directory has no checkpoints/last\.ckpt"),
    ("resume-empty-file", "check", lambda t: [f"resume={write_file(t, 'empty.ckpt', b'')}"], r"empty\.ckpt: not a readable checkpoint \(truncated"),
    ("resume-random-bytes", "check", lambda t: [f"resume={write_file(t, 'random.ckpt', random.Random(0).randbytes(5000))}"], r"random\.ckpt: not a readable checkpoint"),
    ("resume-bytes-that-break-the-unpickler", "check", lambda t: [f"resume={write_file(t, 'r.ckpt', random.Random(2).randbytes(10))}"], r"r\.ckpt: not a readable checkpoint \(truncated, damaged, or not a torch file: IndexError: pop from empty list\)"),
    ("resume-pickle-payload", "cli", lambda t: [f"resume={write_file(t, 'evil.ckpt', pickle.dumps(Payload(), protocol=2))}"], r"evil\.ckpt: holds objects other than tensors and plain data \(posix\.system\); mtl reads checkpoints as data only"),
    ("resume-pickle", "cli", lambda t: [f"resume={write_file(t, 'pickle.ckpt', pickle.dumps(Path('x')))}"], r"pickle\.ckpt: (holds objects other than tensors|not a readable checkpoint)"),
    ("run-dir-is-a-file", "cli", lambda t: [f"hydra.run.dir={write_file(t, 'a_file', b'x')}"], r"hydra\.run\.dir=.*a_file is an existing file, not a directory"),
    ("target-in-a-task-file", "cli", lambda t: global_task_file(t, f"callbacks:\n  evil:\n    _target_: builtins.open\n    file: {t}/pwned\n    mode: w\n"), r"callbacks\.evil\._target_: 'builtins\.open' is not a class"),
    ("target-outside-object-keys", "check", lambda t: global_task_file(t, "paths:\n  evil:\n    _target_: torch.load\n"), r"paths\.evil\._target_: objects are built only at trainer, logger\.\*, callbacks\.\*"),
    ("target-of-the-wrong-kind", "check", lambda t: global_task_file(t, "logger:\n  evil:\n    _target_: pytorch_lightning.callbacks.EarlyStopping\n"), r"logger\.evil\._target_: pytorch_lightning\.callbacks\.EarlyStopping is not a pytorch_lightning\.loggers\.Logger"),
    ("truncated-model-safetensors", "cli", lambda t: broken_encoder(t, "model.safetensors"), r"model\.safetensors: not a readable safetensors file"),
    ("truncated-config-json", "check", lambda t: broken_encoder(t, "config.json"), r"config\.json: not valid JSON"),
]
# fmt: on


def check_in_process(overrides: list[str]) -> None:
    """What `python -m mtl.train` checks before it builds anything, with its config."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/unused", *overrides])
    check_run(cfg)
    build_encoder(typed(cfg, "encoder", EncoderConfig))


@pytest.mark.parametrize(
    ("through", "setup", "message"),
    [c[1:] for c in SETTING_CASES],
    ids=[c[0] for c in SETTING_CASES],
)
def test_settings_and_files(tmp_path, mtl_train, through, setup, message):
    run = tmp_path / "run"
    if through == "check":
        with pytest.raises(MtlError) as error:
            check_in_process([*TINY, *setup(tmp_path)])
        assert re.search(message, str(error.value)) and "\n" not in str(error.value)
        return
    result = mtl_train(*TINY, f"hydra.run.dir={run}", *setup(tmp_path), cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    assert not (run / "metrics.json").exists() and not (tmp_path / "pwned").exists()


def test_a_failed_runs_directory_can_be_used_again(tmp_path, mtl_train):
    run = tmp_path / "run"
    failed = mtl_train(*TINY, "data.batch_size=0", f"hydra.run.dir={run}", cwd=tmp_path)
    assert failed.returncode == 1
    again = mtl_train(*TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "finished"


def test_a_task_declared_on_the_command_line_trains(tmp_path, mtl_train):
    task = (
        "+task.inline={type: regression, files: {train: " + str(DEMO / "complexity/train.csv")
        + ", val: " + str(DEMO / "complexity/val.csv") + "}, text_column: sentence, "
        "label_column: complexity, range: [1, 7]}"
    )  # fmt: skip
    result = mtl_train(*TINY, "task=[]", task, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    final = json.loads((tmp_path / "run/metrics.json").read_text())["final"]
    assert "val/inline/rmse" in final


def test_resuming_a_checkpoint_of_other_tasks_names_both(tmp_path, mtl_train):
    first = mtl_train(*TINY, "task=[demo_complexity]", f"hydra.run.dir={tmp_path}/a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    result = mtl_train(*TINY, f"resume={tmp_path}/a/checkpoints/last.ckpt",
                       f"hydra.run.dir={tmp_path}/b", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert ("error: resume=" in result.stderr and "the checkpoint trained tasks ['demo_complexity'], "
            "this run has ['demo_complexity', 'demo_sentiment']" in result.stderr)  # fmt: skip


def test_resuming_another_encoder_shape_or_a_finished_run_is_refused_up_front(tmp_path, mtl_train):
    first = mtl_train(*TINY, f"hydra.run.dir={tmp_path}/a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    last = f"{tmp_path}/a/checkpoints/last.ckpt"
    # fmt: off
    cases = [  # the overrides of a resume into a new directory, and the one line expected
        (["encoder=tiny", "encoder.keep_layers=1", "trainer.max_steps=6"], "the checkpoint's encoder has num_hidden_layers 2 (this run: 1); resume with the encoder settings it was trained with"),
        (["encoder=tiny", "trainer.max_steps=4"], "the checkpoint is at step 4 and trainer.max_steps=4: nothing is left to train"),
    ]
    # fmt: on
    for i, (overrides, message) in enumerate(cases):
        result = mtl_train(
            f"resume={last}", *overrides, f"hydra.run.dir={tmp_path}/{i}", cwd=tmp_path
        )
        assert result.returncode == 1, result.stderr[-2000:]
        assert f"error: resume={last}: {message}" in result.stderr, result.stderr[-2000:]
    damages = [  # a damaged checkpoint is refused before training starts, naming what is wrong
        (lambda c: c["mtl_model"].update(encoder=None), "damaged mtl checkpoint: its 'mtl_model.encoder' entry is missing, not a mapping"),
        (lambda c: c.pop("optimizer_states"), "holds the model but not its training state (optimizer_states): start a new run from it with encoder.init_from"),
    ]  # fmt: skip
    for i, (damage, message) in enumerate(damages):
        ckpt = torch.load(last, weights_only=True)
        damage(ckpt)
        torch.save(ckpt, tmp_path / "damaged.ckpt")
        result = mtl_train(f"resume={tmp_path}/damaged.ckpt", "encoder=tiny", "trainer.max_steps=6",
                           f"hydra.run.dir={tmp_path}/d{i}", cwd=tmp_path)  # fmt: skip
        assert result.returncode == 1, result.stderr[-2000:]
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert not (tmp_path / f"d{i}" / "checkpoints").exists()  # refused before any training
        assert "Traceback" not in result.stderr and not (tmp_path / f"{i}/checkpoints").exists()
    finished = mtl_train(f"resume={tmp_path}/a", cwd=tmp_path)  # its own directory, finished
    assert finished.returncode == 1 and "nothing is left to train" in finished.stderr


def test_a_nan_score_stops_the_run_and_is_never_saved(tmp_path, mtl_train):
    """A run whose weights turn NaN at step 4: the validation there stops it with an error;
    the best checkpoint stays the one of step 2."""
    poison = ["+callbacks.poison._target_=probes.PoisonWeights", "+callbacks.poison.step=4"]
    run = tmp_path / "run"
    result = mtl_train(*TINY, "trainer.max_steps=6", *poison, f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 1
    assert re.search(
        r"error: val/score is nan at step 4 \(not finite: val/demo_complexity/mae, ", result.stderr
    ), result.stderr[-2000:]
    assert "this state was not saved" in result.stderr and "Traceback" not in result.stderr
    assert torch.load(run / "checkpoints/best.ckpt", weights_only=True)["global_step"] == 2
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["best_step"] == 2


# ---- faults: signals, kills, killed checkpoint writes ------------------------------------

FAULT = [
    "encoder=tiny",
    "trainer.max_steps=12",
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=1",
]


def trace(path: Path) -> list[str]:
    return ["+callbacks.trace._target_=probes.BatchTrace", f"+callbacks.trace.path={path}"]


def weights(checkpoint: Path) -> dict:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


def test_sigterm_saves_exits_nonzero_and_resumes(tmp_path, mtl_train):
    run = tmp_path / "run"
    stop = [
        "+callbacks.kill._target_=probes.SignalAt",
        "+callbacks.kill.step=6",
        "+callbacks.kill.signal=TERM",
    ]
    result = mtl_train(*FAULT, *stop, f"hydra.run.dir={run}", cwd=tmp_path, subprocess=True)
    assert result.returncode == 128 + 15, result.stderr[-2000:]
    assert (
        f"error: stopped by SIGTERM at step 6; checkpoints/last.ckpt holds this step. Resume with: python -m mtl.train resume={run}"
        in result.stderr
    )
    assert json.loads((run / "metrics.json").read_text())["status"] == "stopped"
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 6
    resumed = mtl_train(f"resume={run}", "~callbacks.kill", cwd=tmp_path)  # the run's own overrides
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and metrics["final"]["step"] == 12


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
def test_sigkill_at_a_random_step_then_resume_is_bit_for_bit(tmp_path, mtl_train):
    step = random.randint(6, 8)  # after the validation at step 4, before the one at step 8
    every = ["callbacks.checkpoints.every_n_steps=1"]
    full = mtl_train(*FAULT, *every, f"hydra.run.dir={tmp_path}/full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    run = tmp_path / "run"
    kill = ["+callbacks.kill._target_=probes.SignalAt", f"+callbacks.kill.step={step}"]
    killed = mtl_train(*FAULT, *every, *kill, *trace(tmp_path / "t1"), f"hydra.run.dir={run}",
                       cwd=tmp_path, subprocess=True)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    last = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    best = torch.load(run / "checkpoints/best.ckpt", weights_only=True)
    assert (
        last["global_step"] == step - 1 != best["global_step"]
    )  # the kill came before step's save
    resumed = mtl_train(f"resume={run}", "~callbacks.kill", *trace(tmp_path / "t2"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["step"] for r in read_trace(tmp_path / "t2")] == list(range(step - 1, 12))
    a, b = weights(tmp_path / "full/checkpoints/last.ckpt"), weights(run / "checkpoints/last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (
        f"killed at step {step}"
    )


def test_sigkill_during_a_checkpoint_write_keeps_the_previous_one(tmp_path, mtl_train):
    run = tmp_path / "run"
    checkpoints = run / "checkpoints"
    kill = ["+callbacks.kill._target_=probes.KillDuringCheckpointWrite", "+callbacks.kill.write=2"]
    # dies writing step 8
    killed = mtl_train(*FAULT, *kill, f"hydra.run.dir={run}", cwd=tmp_path, subprocess=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 4  # intact
    assert len(list(checkpoints.glob(".last.ckpt.*.tmp"))) == 1  # what the killed write left
    assert (run / "run.lock").exists()  # the killed run's, taken over by its resume
    resumed = mtl_train(f"resume={run}", "~callbacks.kill", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(checkpoints.glob(".*.tmp"))  # cleaned up
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 12
    assert torch.load(checkpoints / "best.ckpt", weights_only=True)["global_step"] in (4, 8, 12)


def test_a_pipe_as_a_training_file_is_refused_not_waited_on(tmp_path, tokenizer):
    path = tmp_path / "pipe.csv"  # read, then fingerprinted: a second open would wait forever
    os.mkfifo(path)
    spec = TaskSpec(type="regression", file=str(path), text_column="text", label_column="y")
    with pytest.raises(MtlError, match=r"pipe\.csv: not a regular file \(a pipe\?\)"):
        load_task("t", spec, tokenizer, DataConfig(), seed=0)


def test_rows_all_in_one_group_say_the_train_split_is_empty(tmp_path, tokenizer):
    path = tmp_path / "q.csv"
    path.write_text("text,y,g\n" + "".join(f"row {i},{i},same\n" for i in range(20)))
    spec = TaskSpec(type="regression", file=str(path), text_column="text", label_column="y",
                    split=SplitSpec(group_column="g"))  # fmt: skip
    with pytest.raises(MtlError) as error:
        load_task("t", spec, tokenizer, DataConfig(), seed=0)
    assert str(error.value) == (
        f"task.t: the train split is empty: {path} has 20 rows in 1 group(s) of "
        "split.group_column 'g', too few to deal to train, val"
    )


def test_a_full_disk_during_a_checkpoint_write_fails_the_run_in_one_line(
    tmp_path, mtl_train, monkeypatch
):
    """The disk fills while step 8's checkpoint is written (the second write): one line with
    the cause and the resume command, metrics.json failed with the reason, step 4's
    last.ckpt intact, no temporary file left."""
    real_save, writes = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        if not isinstance(f, io.BufferedWriter):  # an in-memory copy, not a file write
            return real_save(obj, f, *args, **kwargs)
        writes.append(f.name)
        if len(writes) < 2:
            return real_save(obj, f, *args, **kwargs)
        f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "run"
    result = mtl_train(*FAULT, f"hydra.run.dir={run}", cwd=tmp_path)
    monkeypatch.undo()
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error == (
        "error: OSError: [Errno 28] No space left on device (writing a checkpoint): "
        f"'{run}/checkpoints/last.ckpt'; the run can be resumed with: "
        f"python -m mtl.train resume={run}"
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "No space left on device" in metrics["failure"]
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 4
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_report_names_a_truncated_metrics_file(tmp_path, run_module):
    (tmp_path / "runs/a").mkdir(parents=True)
    (tmp_path / "runs/a/metrics.json").write_text('{"status": "fini')
    result = run_module("mtl.report", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert f"error: {tmp_path / 'runs/a/metrics.json'}: cannot be read as JSON" in result.stderr
