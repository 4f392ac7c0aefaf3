"""What training multilingual-e5-small's 250,002 x 384 word embedding costs per step, three ways.

Ways
    * dense:    what mtl.train does with a trainable embedding: the gradient is a dense
                250,002-row tensor, clipped with the rest, and fused AdamW updates every row.
    * row-wise: a sparse gradient (nn.Embedding(sparse=True)) holding only the rows the batch
                touches, clipped by their norm, and a lazy Adam step on those rows alone
                (torch.optim.SparseAdam, with AdamW's decoupled weight decay on those rows): not
                AdamW's update, whose moments keep moving every row that was ever touched.
    * frozen:   the lookup alone (`encoder.freeze_embeddings=true`).

    Each step looks up one batch of --batch real TextComplexityDE19 sentences (from the data
    root, $MTL_DATA_ROOT else ../shared/data) tokenized by e5's tokenizer with its "query: "
    prefix, and back-propagates a fixed random gradient into it: the embedding's own share of
    a training step, without the layers above it. Rounds interleave the ways; medians shown.

Prints per way: ms per step, the extra over the lookup alone, and the bytes a checkpoint holds
for the embedding (weights plus the optimizer's moments; a frozen one is stored once per run).

Usage
    MTL_DATA_ROOT=../shared/data python benchmarks/embedding_update.py [--steps 20]
        [--rounds 5] [--batch 32]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from mtl.pretrained import resolve_pretrained
from mtl.tokenizer import encode_batch, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("MTL_DATA_ROOT", str(ROOT.parent / "shared" / "data")))
LR, WEIGHT_DECAY = 1e-4, 0.01  # mtl's defaults for the encoder


def batches(batch: int, count: int) -> list[torch.Tensor]:
    """`count` padded id tensors of `batch` consecutive sentences each."""
    with open(DATA_ROOT / "TextComplexityDE19" / "ratings.csv", encoding="cp1252") as f:
        sentences = [row["Sentence"] for row in csv.DictReader(f)]
    tokenizer = load_tokenizer(resolve_pretrained("multilingual_e5_small"), 128)
    out = []
    for i in range(count):
        rows = sentences[(i * batch) % len(sentences) :][:batch]
        ids = [e.ids for e in encode_batch(tokenizer, rows, prefix="query: ")]
        padded = torch.ones(len(ids), max(map(len, ids)), dtype=torch.long)  # <pad> is 1
        for r, row in enumerate(ids):
            padded[r, : len(row)] = torch.tensor(row)
        out.append(padded)
    return out


class Way:
    def __init__(self, name: str, rows: int, width: int) -> None:
        self.name = name
        self.embedding = nn.Embedding(rows, width, padding_idx=1, sparse=name == "row-wise")
        params = [self.embedding.weight]
        if name == "dense":
            self.optimizer = torch.optim.AdamW(params, LR, weight_decay=WEIGHT_DECAY, fused=True)
        elif name == "row-wise":
            self.optimizer = torch.optim.SparseAdam(params, LR)
        else:
            self.embedding.requires_grad_(False)

    def step(self, ids: torch.Tensor, upstream: torch.Tensor) -> None:
        vectors = self.embedding(ids)
        if self.name == "frozen":
            return
        vectors.backward(upstream)
        weight = self.embedding.weight
        if self.name == "dense":
            nn.utils.clip_grad_norm_([weight], 1.0)
        else:
            weight.grad = weight.grad.coalesce()
            norm = weight.grad.values().norm()
            weight.grad.values().mul_((1.0 / (norm + 1e-6)).clamp(max=1.0))
            touched = weight.grad.indices()[0]
            weight.data[touched] *= 1 - LR * WEIGHT_DECAY
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def checkpoint_bytes(self) -> int:
        """The embedding's weights and the optimizer's moments, as a checkpoint stores them."""
        if self.name == "frozen":
            return 0
        state = self.optimizer.state[self.embedding.weight]
        moments = sum(v.numel() * v.element_size() for v in state.values()
                      if isinstance(v, torch.Tensor) and v.dim() > 0)  # fmt: skip
        weight = self.embedding.weight
        return weight.numel() * weight.element_size() + moments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = batches(args.batch, args.steps)
    upstream = [torch.randn(*ids.shape, 384) for ids in data]
    ways = [Way(name, 250_002, 384) for name in ("dense", "row-wise", "frozen")]
    for way in ways:  # warm-up: allocations, the optimizers' state
        way.step(data[0], upstream[0])
    times: dict[str, list[float]] = {w.name: [] for w in ways}
    for _ in range(args.rounds):
        for way in ways:
            started = time.perf_counter()
            for ids, grad in zip(data, upstream, strict=True):
                way.step(ids, grad)
            times[way.name].append((time.perf_counter() - started) / args.steps)
    tokens = statistics.mean(int((ids != 1).sum()) for ids in data)
    print(f"batch {args.batch} ({tokens:.0f} real tokens), {args.steps} steps, "
          f"median of {args.rounds} rounds, {torch.get_num_threads()} threads")  # fmt: skip
    lookup = statistics.median(times["frozen"])
    for way in ways:
        ms = 1000 * statistics.median(times[way.name])
        print(f"{way.name:<9} {ms:7.1f} ms/step  (+{ms - 1000 * lookup:.1f} ms over the lookup)  "
              f"checkpoint {way.checkpoint_bytes() / 1e6:,.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
