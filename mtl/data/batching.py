"""Batches of row indices with dynamic padding: each batch is padded to its own longest row."""

from __future__ import annotations

import random

import torch
from torch import Tensor

from mtl.data.cache import TokenizedTexts


def bucketed_batches(
    lengths: list[int],
    batch_size: int,
    rng: random.Random,
    bucket_batches: int = 50,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """One shuffled pass in length-bucketed batches.

    Rows are shuffled, cut into chunks of `bucket_batches * batch_size`, each chunk is sorted by
    length and cut into batches (so a batch holds rows of similar length), and the batches are
    shuffled. Padding stays small while the order stays random. With `max_tokens` a batch takes
    rows while rows × its longest row stays within the budget (at least one row): short texts
    come in more rows per batch, long ones in fewer.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), chunk):
        rows = sorted(order[start : start + chunk], key=lengths.__getitem__)
        if max_tokens is None:
            batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
            continue
        batch: list[int] = []
        for row in rows:  # ascending: the new row is the batch's longest
            if batch and (len(batch) + 1) * lengths[row] > max_tokens:
                batches.append(batch)
                batch = []
            batch.append(row)
        batches.append(batch)
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches: all rows sorted by length, cut in order (least padding)."""
    rows = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def collate(
    tokens: TokenizedTexts, rows: list[int], pad_id: int, multiple: int = 1
) -> dict[str, Tensor]:
    """input_ids, token_type_ids, attention_mask: (B, T) with T the longest row in the batch,
    rounded up to a `multiple` (on a GPU, repeating shapes let kernels and CUDA graphs be
    reused; on a CPU, 1 keeps padding minimal)."""
    pieces = [tokens.row(i) for i in rows]
    T = -(-max(len(ids) for ids, _ in pieces) // multiple) * multiple
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), T), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), T), dtype=torch.long)
    for b, (ids, types) in enumerate(pieces):
        input_ids[b, : len(ids)] = ids
        token_type_ids[b, : len(ids)] = types
        attention_mask[b, : len(ids)] = 1
    return {
        "input_ids": input_ids,
        "token_type_ids": token_type_ids,
        "attention_mask": attention_mask,
    }
