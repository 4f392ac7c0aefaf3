"""Prediction throughput: mtl.predict's length-sorted, dynamically padded batches against the
usual way (input order, batches of 32, every row padded to max_length).

What it measures
    Texts per second for predicting N short texts (default 10,000 demo sentences, cycled) with
    the packaged MiniLM encoder and one regression head, both ways in one process, under the
    same precision (bf16 autocast, as the default run trains) and `torch.inference_mode()`:

    * mtl:      `Predictor.predict` (tokenize once, sort by length, batches of --batch rows
                padded to their own longest row, outputs back in input order).
    * baseline: the same encoder and head, rows in input order, batches of 32, each padded
                to --max-length tokens.

    Rounds alternate between the two (mtl, baseline, mtl, ...); the median of --rounds is
    reported, and the ratio of medians. Numbers move ±25% on a shared CPU, the ratio less.

Usage
    python benchmarks/predict_throughput.py [--texts 10000] [--rounds 3] [--batch 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from mtl.cli import quiet_known_warnings
from mtl.encoder import Bert
from mtl.model import MultiTaskModel
from mtl.predict import Predictor
from mtl.pretrained import load_pretrained
from mtl.tasks import RegressionTask, TaskSpec
from mtl.tokenizer import encode, pad_id
from mtl.trained import TrainedModel

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


def demo_texts(n: int) -> list[str]:
    texts = []
    for file in ("complexity/train.csv", "sentiment/train.csv"):
        lines = (DEMO / file).read_text(encoding="utf-8").splitlines()[1:]
        texts += [line.rsplit(",", 1)[0].strip('"') for line in lines]
    return [texts[i % len(texts)] for i in range(n)]


def model(max_length: int) -> TrainedModel:
    encoder, tokenizer = load_pretrained("minilm", max_length, pooling="mean")
    spec = TaskSpec(type="regression", file="x")
    task = RegressionTask.fit("score", spec, [1.0, 7.0])
    info = {"precision": "bf16-mixed", "max_length": max_length}
    return TrainedModel(
        MultiTaskModel(encoder, {"score": task}).eval(), tokenizer, info, Path("minilm")
    )


@torch.inference_mode()
def baseline(trained: TrainedModel, texts: list[str], max_length: int) -> list[float]:
    """Input order, 32 rows a batch, every row padded to max_length."""
    ids, types = encode(trained.tokenizer, texts)
    pad, out = pad_id(trained.tokenizer), []
    encoder: Bert = trained.model.encoder
    for start in range(0, len(texts), 32):
        rows = range(start, min(start + 32, len(texts)))
        input_ids = torch.full((len(rows), max_length), pad, dtype=torch.long)
        token_types = torch.zeros_like(input_ids)
        for b, i in enumerate(rows):
            input_ids[b, : len(ids[i])] = torch.tensor(ids[i])
            token_types[b, : len(types[i])] = torch.tensor(types[i])
        mask = (input_ids != pad).long()
        with trained.autocast(torch.device("cpu")):
            pooled = encoder(input_ids, mask, token_types).pooled
            y = trained.tasks["score"].predict(trained.model.heads["score"](pooled))
        out += y.tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64, help="mtl's batch size")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    quiet_known_warnings()
    texts = demo_texts(args.texts)
    trained = model(args.max_length)
    predictor = Predictor([trained])
    lengths = [len(x) for x in encode(trained.tokenizer, texts)[0]]
    print(f"{len(texts)} texts, {statistics.mean(lengths):.1f} tokens on average (max "
          f"{max(lengths)}), MiniLM, bf16 autocast, {torch.get_num_threads()} threads")  # fmt: skip
    predictor.predict(texts[:256], batch_size=args.batch)  # warm-up
    baseline(trained, texts[:256], args.max_length)
    times: dict[str, list[float]] = {"mtl": [], "baseline": []}
    for _ in range(args.rounds):
        start = time.perf_counter()
        ours = [r["score"] for r in predictor.predict(texts, batch_size=args.batch)]
        times["mtl"].append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = baseline(trained, texts, args.max_length)
        times["baseline"].append(time.perf_counter() - start)
    worst = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"{name:<9} {len(texts) / median:8.0f} texts/s  (median of {args.rounds}: "
              f"{median:.2f} s)")  # fmt: skip
    ratio = statistics.median(times["baseline"]) / statistics.median(times["mtl"])
    print(f"ratio vs input-order padded batches: {ratio:.1f}x  (largest output difference "
          f"{worst:.2g}, bf16)")  # fmt: skip


if __name__ == "__main__":
    main()
