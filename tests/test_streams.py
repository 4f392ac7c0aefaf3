"""Batch streams and the multi-task batch sampler: coverage, joint steps, exact resume."""

import random
import statistics
from collections import Counter

import pytest
from probes import read_trace

from mtl.data.batching import bucketed_batches
from mtl.data.datamodule import steps_per_epoch
from mtl.data.loading import DataConfig
from mtl.data.streams import MultiTaskBatchSampler
from mtl.errors import ConfigError
from mtl.sampling import FixedSampler, UniformSampler


def uniform(lengths: dict[str, list[int]]) -> UniformSampler:
    return UniformSampler(sizes=[len(v) for v in lengths.values()], names=list(lengths))


def each(lengths: dict[str, list[int]], size: int) -> dict[str, int]:
    return dict.fromkeys(lengths, size)


def run(batch_sampler, epochs):
    return [batch for _ in range(epochs) for batch in batch_sampler]


def test_batch_sampler_yields_one_task_per_batch_and_covers_rows():
    lengths = {"a": [5, 3, 8, 2, 9, 4, 7], "b": [1, 2, 3]}
    sampler = MultiTaskBatchSampler(lengths, uniform(lengths), each(lengths, 2), 50, seed=1)
    batches = run(sampler, 2)
    assert len(batches) == 100
    a_rows = Counter()
    for batch in batches:
        assert len(batch.parts) == 1  # every batch is one task's
        task, rows = batch.parts[0]
        assert set(rows) <= set(range(len(lengths[task])))
        assert batch.probabilities == [0.5, 0.5]
        if task == "a":
            a_rows.update(rows)
    # task a's stream runs whole passes: every row appears, none far more than others
    assert set(a_rows) == set(range(7))
    assert max(a_rows.values()) - min(a_rows.values()) <= 1 + max(a_rows.values()) // 4


def test_task_sequence_is_reproducible_and_seeded():
    def sequence(seed):
        lengths = {"a": [3] * 40, "b": [3] * 40}
        sampler = MultiTaskBatchSampler(lengths, uniform(lengths), each(lengths, 4), 30, seed)
        return [b.parts[0][0] for b in run(sampler, 2)]

    assert sequence(0) == sequence(0)
    assert sequence(0) != sequence(1)


def test_streams_are_keyed_by_task_name_not_position():
    """Listing the tasks in another order changes which rows no task reads."""

    def rows_by_task(names):
        lengths = {n: list(range(1, 41)) for n in names}
        weights = {"a": 1.0, "b": 0.0, "c": 0.0}  # only a trains: its stream alone advances
        sampler = FixedSampler(sizes=[40] * 3, names=names, weights=weights)
        batches = run(MultiTaskBatchSampler(lengths, sampler, each(lengths, 4), 20, seed=5), 1)
        return [b.parts[0][1] for b in batches]

    assert rows_by_task(["a", "b", "c"]) == rows_by_task(["c", "b", "a"])


def test_joint_steps_draw_distinct_tasks():
    lengths = {n: [3] * 40 for n in "abc"}
    sampler = MultiTaskBatchSampler(
        lengths, uniform(lengths), each(lengths, 4), 20, 0, tasks_per_step=2
    )
    for batch in sampler:
        tasks = [task for task, _ in batch.parts]
        assert len(tasks) == 2 and len(set(tasks)) == 2
        assert all(len(rows) == 4 for _, rows in batch.parts)


def test_batch_sampler_resumes_exactly_from_a_batch_state():
    lengths = {"a": [3] * 50, "b": [5] * 30}

    def make():
        return MultiTaskBatchSampler(lengths, uniform(lengths), each(lengths, 4), 25, 7)

    full = [b.parts for b in run(make(), 3)]
    batches = iter(make())
    taken = [next(batches) for _ in range(10)]
    resumed = make()
    resumed.load_state_dict(taken[-1].state)  # the state after the 10th batch
    rest = [b.parts for b in run(resumed, 3)][:65]
    assert rest == full[10:]


def test_each_task_batches_at_its_own_size():
    lengths = {"a": [3] * 40, "b": [3] * 40}
    sampler = MultiTaskBatchSampler(lengths, uniform(lengths), {"a": 4, "b": 10}, 30, seed=0)
    sizes = {task: len(rows) for batch in sampler for task, rows in batch.parts}
    assert sizes == {"a": 4, "b": 10}


def test_a_token_budget_gives_short_rows_bigger_batches_within_the_budget():
    rng = random.Random(0)
    lengths = [rng.choice([8, 12, 100, 128]) for _ in range(3000)]
    batches = bucketed_batches(lengths, 32, random.Random(1), max_tokens=1024)
    assert sorted(r for b in batches for r in b) == list(range(3000))  # each row once
    assert all(len(b) * max(lengths[r] for r in b) <= 1024 for b in batches)
    rows_at = {n: [len(b) for b in batches if max(lengths[r] for r in b) == n] for n in (12, 128)}
    assert statistics.median(rows_at[12]) == 1024 // 12 and max(rows_at[128]) == 8
    short_heavy = {"a": [10] * 4000}
    assert steps_per_epoch(short_heavy, {"a": 32}, DataConfig(max_tokens=640), seed=0) == 63


def test_resuming_with_another_token_budget_is_refused():
    lengths = {"a": [5] * 50}
    before = MultiTaskBatchSampler(lengths, uniform(lengths), each(lengths, 4), 10, seed=0,
                                   max_tokens=40)  # fmt: skip
    after = MultiTaskBatchSampler(lengths, uniform(lengths), each(lengths, 4), 10, seed=0)
    with pytest.raises(ConfigError, match=r"\(batch_size, ranks, max_tokens\) = \(4, 1, 40\)"):
        after.load_state_dict(before.state_dict())


def test_token_budget_batches_through_the_cli(tmp_path, mtl_train):
    result = mtl_train("encoder=tiny", "data.max_tokens=600", "trainer.max_steps=12",
                       "trainer.val_check_interval=12", "+callbacks.trace._target_=probes.BatchTrace",
                       f"+callbacks.trace.path={tmp_path}/trace", f"hydra.run.dir={tmp_path}/run",
                       cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    parts = [p for record in read_trace(tmp_path / "trace") for p in record["parts"]]
    assert all(len(p["rows"]) * p["width"] <= 600 for p in parts)
    assert max(len(p["rows"]) for p in parts) > 16  # more rows than data.batch_size
