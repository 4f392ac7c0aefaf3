"""Split one file's rows into train/val/test, keeping rows of the same group together."""

from __future__ import annotations

import random

from mtl.tasks import SplitSpec


def split_indices(n: int, groups: list[str] | None, spec: SplitSpec) -> dict[str, list[int]]:
    """Row indices per split. Groups (or single rows) are shuffled with `spec.seed` and dealt
    to test, then val, until each holds at least its fraction of the rows; the rest is train.
    """
    keys = groups if groups is not None else [str(i) for i in range(n)]
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    order = sorted(members)
    random.Random(spec.seed).shuffle(order)
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    quota = {"test": spec.test_fraction * n, "val": spec.val_fraction * n}
    for key in order:
        target = next((s for s in ("test", "val") if len(splits[s]) < quota[s]), "train")
        splits[target].extend(members[key])
    return {name: sorted(rows) for name, rows in splits.items() if rows}
