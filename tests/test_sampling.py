"""Task samplers: empirical frequencies match the formulas; the task sequence is reproducible."""

import math
from collections import Counter

import pytest

from mtl.sampling import (
    MultiTaskBatchSampler,
    ProportionalSampler,
    TemperatureSampler,
    UniformSampler,
)

SIZES = [1000, 250, 40]
DRAWS = 20_000


def _frequencies(sampler, draws=DRAWS, seed=0):
    counts = Counter(sampler.choose(step, seed) for step in range(draws))
    return [counts[i] / draws for i in range(len(sampler.sizes))]


def _assert_matches(observed, expected, draws=DRAWS):
    # Each count is Binomial(draws, p): a 4.5-sigma band fails a correct sampler with
    # probability < 1e-5 per task, while a wrong formula (differences >= 0.05 here) fails it.
    for obs, p in zip(observed, expected, strict=True):
        assert abs(obs - p) < 4.5 * math.sqrt(p * (1 - p) / draws), (observed, expected)


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        (UniformSampler(SIZES), [1 / 3] * 3),
        (ProportionalSampler(SIZES), [n / sum(SIZES) for n in SIZES]),
        (
            TemperatureSampler(SIZES, temperature=2.0),
            [math.sqrt(n) / sum(math.sqrt(m) for m in SIZES) for n in SIZES],
        ),
        (TemperatureSampler(SIZES, temperature=1.0), [n / sum(SIZES) for n in SIZES]),
    ],
    ids=["uniform", "proportional", "temperature2", "temperature1"],
)
def test_frequencies_match_formula(sampler, expected):
    assert sampler.probabilities(0) == pytest.approx(expected)
    _assert_matches(_frequencies(sampler), expected)


def test_temperature_moves_from_proportional_toward_uniform():
    p = [TemperatureSampler(SIZES, temperature=t).probabilities(0)[2] for t in (1, 2, 5, 100)]
    assert p == sorted(p) and p[-1] < 1 / 3 and p[-1] > 0.3


def test_invalid_sampler_arguments():
    with pytest.raises(ValueError, match="temperature"):
        TemperatureSampler(SIZES, temperature=0)
    with pytest.raises(ValueError, match="training rows"):
        UniformSampler([10, 0])


def _run(batch_sampler, epochs):
    out = []
    for epoch in range(epochs):
        batch_sampler.set_epoch(epoch)
        out += list(batch_sampler)
    return out


def test_batch_sampler_yields_one_task_per_batch_and_covers_rows():
    lengths = [[5, 3, 8, 2, 9, 4, 7], [1, 2, 3]]
    sampler = MultiTaskBatchSampler(lengths, UniformSampler([7, 3]), 2, 50, seed=1)
    batches = _run(sampler, 2)
    assert len(batches) == 100
    task0_rows = Counter()
    for batch in batches:
        tasks = {0 if i < 7 else 1 for i in batch}
        assert len(tasks) == 1  # every batch is one task's
        if tasks == {0}:
            task0_rows.update(batch)
    # task 0's stream runs whole passes: every row appears, none far more than others
    assert set(task0_rows) == set(range(7))
    assert max(task0_rows.values()) - min(task0_rows.values()) <= 1 + max(task0_rows.values()) // 4


def test_task_sequence_is_reproducible_and_seeded():
    def sequence(seed):
        sampler = MultiTaskBatchSampler([[3] * 40, [3] * 40], UniformSampler([40, 40]), 4, 30, seed)
        return [b[0] >= 40 for b in _run(sampler, 2)]

    assert sequence(0) == sequence(0)
    assert sequence(0) != sequence(1)
