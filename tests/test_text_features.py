"""Text statistics as head inputs (`features:` in a task spec): computed, standardized on the
training split, kept in the checkpoint, and used by training and prediction alike."""

import csv
import json
import math
import random
from pathlib import Path

import pytest
import torch

from mtl import trained
from mtl.tasks.text_stats import STATISTICS, TextFeatures


def test_statistics_count_what_their_names_say():
    text = "Die Sachtextformel misst Lesbarkeit, grob."
    assert STATISTICS["words"](text) == pytest.approx(math.log1p(5))
    assert STATISTICS["chars"](text) == pytest.approx(math.log1p(len(text)))
    assert STATISTICS["long_words"](text) == pytest.approx(2 / 5)  # Sachtextformel, Lesbarkeit
    assert STATISTICS["syllables"]("Sachtextformel") == 4  # a, e, o, e
    assert STATISTICS["polysyllables"](text) == pytest.approx(2 / 5)
    assert STATISTICS["punctuation"](text) == 2.0 and STATISTICS["commas"](text) == 1.0
    assert STATISTICS["word_length"]("") == 0.0  # no words: no division by zero


def test_features_are_standardized_with_the_training_statistics():
    texts = ["Kurz.", "Ein etwas längerer Satz.", "Ein sehr viel längerer Satz, mit Komma."]
    features = TextFeatures.fit(["chars", "words", "commas"], texts)
    x = features(texts)  # (N, F)
    assert x.shape == (3, 3) and x.dtype == torch.float32
    assert torch.allclose(x.mean(0), torch.zeros(3), atol=1e-6)
    assert torch.allclose(x.std(0), torch.ones(3), atol=1e-6)
    assert TextFeatures.from_state(json.loads(json.dumps(features.state()))) == features


@pytest.fixture(scope="module")
def length_task(tmp_path_factory) -> Path:
    """Label = log(number of words), 2-30 random German words: a task one text statistic
    solves and a tiny random encoder does not."""
    folder = tmp_path_factory.mktemp("length")
    words = ["Haus", "Baum", "Fluss", "Stadt", "Weg", "Licht", "Zeit", "Wort", "Bild", "Feld"]
    rng = random.Random(0)
    for split, n in (("train", 400), ("val", 100)):
        with open(folder / f"{split}.csv", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["text", "label"])
            for _ in range(n):
                k = rng.randint(2, 30)
                out.writerow([" ".join(rng.choices(words, k=k)) + ".", round(math.log(k), 4)])
    return folder


def _task(folder: Path, features: str) -> list[str]:
    return [
        "task=[]", "+task.length.type=regression",
        f"+task.length.files.train={folder}/train.csv", f"+task.length.files.val={folder}/val.csv",
        f"+task.length.features={features}", "encoder=tiny", "transfer=feature_extraction",
        "trainer.max_steps=200", "trainer.val_check_interval=200", "optimizer.head_lr=3e-2",
        "scheduler=constant",
    ]  # fmt: skip


@pytest.mark.slow  # in CI's slow run: keeps the default run well under 15 minutes
def test_a_head_with_text_statistics_learns_what_the_frozen_encoder_cannot(
    tmp_path, length_task, mtl_train, run_module
):
    r2 = {}
    for name, features in (("none", "[]"), ("words", "[words]")):
        run = tmp_path / name
        result = mtl_train(*_task(length_task, features), f"hydra.run.dir={run}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        r2[name] = json.loads((run / "metrics.json").read_text())["final"]["val/length/r2"]
    assert r2["words"] > 0.95 and r2["none"] < 0.85, r2

    run = tmp_path / "words"
    model = trained.load(run)
    assert model.tasks["length"].text_features.names == ("words",)
    head = model.model.state_dict()["heads.length.net.1.weight"]
    assert head.shape[1] == model.model.encoder.hidden_size + 1
    texts = tmp_path / "texts.txt"
    texts.write_text("Haus Baum.\n" + " ".join(["Haus"] * 25) + ".\n")
    out = tmp_path / "out.jsonl"
    result = run_module("mtl.predict", str(run), "--input", str(texts), "--format", "lines",
                        "--output", str(out), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    short, long = (json.loads(line)["length"] for line in out.read_text().splitlines())
    assert short == pytest.approx(math.log(2), abs=0.3)
    assert long == pytest.approx(math.log(25), abs=0.3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task.demo_complexity.features=[chars,size]"],
         "task.demo_complexity.features: unknown text statistic 'size' (known: chars, words"),
        (["task=[demo_tagging]", "task.demo_tagging.features=[chars]"],
         "task.demo_tagging.features: text statistics feed heads with a label per text"),
    ],
)  # fmt: skip
def test_bad_features_name_the_key(tmp_path, mtl_train, overrides, message):
    result = mtl_train(*overrides, "encoder=tiny", f"hydra.run.dir={tmp_path}/run", cwd=tmp_path)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
