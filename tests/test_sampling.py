"""Task samplers: empirical frequencies match the formulas; adaptive state stays bounded."""

import math
from collections import Counter

import pytest

from mtl.errors import ConfigError
from mtl.sampling import (
    AnnealedSampler,
    CurriculumSampler,
    DynamicSampler,
    FixedSampler,
    ProportionalSampler,
    RoundRobinSampler,
    TemperatureSampler,
    UniformSampler,
)

SIZES = [1000, 250, 40]
DRAWS = 20_000


def _frequencies(sampler, draws=DRAWS, seed=0):
    counts = Counter(sampler.choose(step, seed)[0] for step in range(draws))
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
            TemperatureSampler(sizes=SIZES, temperature=2.0),
            [math.sqrt(n) / sum(math.sqrt(m) for m in SIZES) for n in SIZES],
        ),
        (TemperatureSampler(sizes=SIZES, temperature=1.0), [n / sum(SIZES) for n in SIZES]),
        (
            TemperatureSampler(sizes=SIZES, temperature=1.0, cap=250),
            [250 / 540, 250 / 540, 40 / 540],
        ),
        (
            FixedSampler(sizes=SIZES, names=list("abc"), weights={"a": 1, "b": 1, "c": 2}),
            [0.25, 0.25, 0.5],
        ),
    ],
    ids=["uniform", "proportional", "temperature2", "temperature1", "capped", "fixed"],
)
def test_frequencies_match_formula(sampler, expected):
    assert sampler.probabilities(0) == pytest.approx(expected)
    _assert_matches(_frequencies(sampler), expected)


def test_temperature_moves_from_proportional_toward_uniform():
    p = [TemperatureSampler(sizes=SIZES, temperature=t).probabilities(0)[2] for t in (1, 2, 5, 100)]
    assert p == sorted(p) and p[-1] < 1 / 3 and p[-1] > 0.3


def test_invalid_sampler_arguments():
    with pytest.raises(ConfigError, match="temperature"):
        TemperatureSampler(sizes=SIZES, temperature=0)
    with pytest.raises(ValueError, match="training rows"):
        UniformSampler([10, 0])


def test_annealed_moves_from_proportional_to_near_uniform_by_epoch():
    # E = 5 epochs of 4000 steps: α = 1, 0.8, 0.6, 0.4, 0.2
    sampler = AnnealedSampler(sizes=SIZES, total_steps=20_000, steps_per_epoch=4000)
    for epoch, alpha in enumerate([1.0, 0.8, 0.6, 0.4, 0.2]):
        steps = range(epoch * 4000, (epoch + 1) * 4000)
        counts = Counter(sampler.choose(s, 0)[0] for s in steps)
        expected = [n**alpha / sum(m**alpha for m in SIZES) for n in SIZES]
        assert sampler.alpha(steps[0]) == pytest.approx(alpha)
        _assert_matches([counts[i] / 4000 for i in range(3)], expected, draws=4000)


def test_round_robin_takes_every_task_in_turn():
    sampler = RoundRobinSampler(sizes=SIZES)
    assert [sampler.choose(s, 0)[0] for s in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert sampler.choose(5, 0, k=2) == [2, 0]


def test_curriculum_runs_phases_with_mix():
    sampler = CurriculumSampler(
        sizes=SIZES, names=list("abc"), order=["c", "a"], fractions=[1, 3], mix=0.3,
        total_steps=8000,
    )  # fmt: skip
    assert sampler.probabilities(0) == pytest.approx([0.1, 0.1, 0.8])  # c for the first 2000
    assert sampler.probabilities(2000) == pytest.approx([0.8, 0.1, 0.1])  # then a
    counts = Counter(sampler.choose(s, 0)[0] for s in range(2000))
    _assert_matches([counts[i] / 2000 for i in range(3)], [0.1, 0.1, 0.8], draws=2000)
    with pytest.raises(ConfigError, match="unknown task 'd'"):
        CurriculumSampler(sizes=SIZES, names=list("abc"), order=["d"])


def dynamic(**kw) -> DynamicSampler:
    return DynamicSampler(sizes=[100, 100], names=["a", "b"], tau=0.2, update_every=10,
                          floor=0.1, lag=2, **kw)  # fmt: skip


def test_dynamic_sampler_favours_the_task_that_improves_least():
    sampler = dynamic()
    assert sampler.probabilities(0) == pytest.approx([0.5, 0.5])
    for step in range(40):  # task a stays at 1.0, task b falls to a quarter
        sampler.observe(step, {"a": 1.0, "b": 1.0 / (1 + step / 10)})
    ratios = sampler.ratios(38)
    assert ratios[0] == pytest.approx(1.0) and ratios[1] < 0.5
    p = sampler.probabilities(40)
    e = [2.718281828 ** (r / 0.2) for r in ratios]
    expected = [0.9 * x / sum(e) + 0.05 for x in e]
    assert p == pytest.approx(expected)
    counts = Counter(sampler.choose(s, 0)[0] for s in range(40, 50))
    assert p[0] > 0.75 and counts[0] >= counts[1]
    # a restored copy chooses identically
    restored = dynamic()
    restored.load_state_dict(sampler.state_dict())
    assert [restored.choose(s, 0) for s in range(40, 60)] == [
        sampler.choose(s, 0) for s in range(40, 60)
    ]


def test_joint_step_fills_up_when_fewer_tasks_have_probability():
    sampler = CurriculumSampler(
        sizes=SIZES, names=list("abc"), order=["a", "b", "c"], total_steps=30
    )
    for step in range(30):
        tasks = sampler.choose(step, 0, k=2)
        assert len(set(tasks)) == 2 and tasks[0] == step // 10  # the phase's task comes first
    with pytest.raises(ConfigError, match="at least one task needs a weight"):
        FixedSampler(sizes=SIZES, names=list("abc"), weights={"a": 0, "b": 0, "c": 0})


def test_dynamic_sampler_state_does_not_grow_with_steps():
    """The checkpointed state is O(K + update_every + lag), however long the run: the state
    after 2,000 steps holds no more numbers than after 200, and its ratios equal a
    recomputation over the whole history."""
    sizes = {}
    for steps in (200, 2000):
        sampler, history = dynamic(), []
        for step in range(steps):
            losses = {"a": 1.0 + (step % 7) / 10, "b": 2.0 / (1 + step / 50)}
            sampler.observe(step, losses)
            history += [(step, 0 if n == "a" else 1, x) for n, x in losses.items()]
        sizes[steps] = numbers(sampler.state_dict())
        cutoff = sampler.cutoff(steps)
        first, average = [None, None], [None, None]
        for step, task, loss in history:  # the EMA over the whole history, the slow way
            if step < cutoff:
                first[task] = loss if first[task] is None else first[task]
                prev = average[task]
                average[task] = loss if prev is None else 0.9 * prev + (1 - 0.9) * loss
        assert sampler.ratios(cutoff) == [average[0] / first[0], average[1] / first[1]]
    assert sizes[2000] <= sizes[200] <= 2 + 2 * 2 + 3 * 2 * (10 + 2)  # K=2, U=10, lag=2


def numbers(state) -> int:
    """How many numbers a (nested) state holds."""
    if isinstance(state, dict):
        return sum(numbers(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(numbers(v) for v in state)
    return 1
