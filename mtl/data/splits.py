"""Split one file's rows into train/val/test, keeping rows of the same group together."""

from __future__ import annotations

import random

import numpy as np

from mtl.tasks import SplitSpec


def split_indices(n: int, groups: list[str] | None, spec: SplitSpec) -> dict[str, list[int]]:
    """Row indices per split. Groups (or single rows) are shuffled with `spec.seed` and dealt
    to test, then val, until each holds at least its fraction of the rows; the rest is train.

    With `spec.folds` = K (cross-validation), the test split is fold `spec.fold`: the groups in
    natural order (numbers numerically), permuted by `numpy.random.default_rng(spec.seed)` and
    cut into K parts with `array_split`; val is dealt from the other groups as above, as
    `val_fraction` of them.
    """
    keys = groups if groups is not None else [str(i) for i in range(n)]
    members: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    order = sorted(members)
    splits: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    quota = {"test": spec.test_fraction * n, "val": spec.val_fraction * n}
    if spec.folds:
        natural = sorted(members, key=_natural)
        permuted = np.random.default_rng(spec.seed).permutation(len(natural))
        held = {natural[i] for i in np.array_split(permuted, spec.folds)[spec.fold]}
        for key in held:
            splits["test"].extend(members[key])
        order = [key for key in order if key not in held]
        quota = {"test": 0, "val": spec.val_fraction * (n - len(splits["test"]))}
    random.Random(spec.seed).shuffle(order)
    for key in order:
        target = next((s for s in ("test", "val") if len(splits[s]) < quota[s]), "train")
        splits[target].extend(members[key])
    return {name: sorted(rows) for name, rows in splits.items() if rows}


def _natural(key: str) -> tuple:
    """Numbers in numeric order ("2" before "10"), before any other keys in text order."""
    return (0, int(key), "") if key.lstrip("-").isdigit() else (1, 0, key)
